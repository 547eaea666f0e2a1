package config

import (
	"errors"
	"strings"
	"testing"

	"mailproxy/policy"
)

const oauthFile = `[[provider]]
name = "example"
hosts = ["mail.example.com", "login.example.com"]
imap = "imaps://mail.example.com:993"
[provider.oauth2]
client_id = "abc"
auth_url = "https://login.example.com/authorize"
token_url = "https://login.example.com/token"
device_auth_url = "https://login.example.com/device"
scopes = ["https://mail.example.com/"]

[[provider]]
name = "gmail"
[provider.oauth2]
client_id = "123.apps.googleusercontent.com"
client_secret = "not-confidential"

[[listen]]
protocol = "imap"
address = "127.0.0.1:1143"
provider = "example"

[[listen]]
protocol = "smtp"
address = "127.0.0.1:1587"
provider = "gmail"
`

func TestOAuth2Config(t *testing.T) {
	c, err := Parse("m.toml", []byte(oauthFile))
	if err != nil {
		t.Fatal(err)
	}
	o := c.Provider("example").OAuth2
	if o == nil || o.ClientID != "abc" || o.TokenURL != "https://login.example.com/token" || o.DeviceAuthURL == "" || len(o.Scopes) != 1 {
		t.Fatalf("example: %+v", o)
	}
	g := c.Provider("gmail")
	if g == nil || g.OAuth2 == nil || g.OAuth2.ClientID != "123.apps.googleusercontent.com" || g.OAuth2.ClientSecret != "not-confidential" ||
		g.OAuth2.TokenURL != "https://oauth2.googleapis.com/token" || len(g.Endpoints) != 3 || !g.Allows("oauth2.googleapis.com") {
		t.Fatalf("gmail from the preset: %+v", g)
	}
	// A preset without a file has no client, so it relays passwords.
	for _, name := range []string{"gmail", "outlook"} {
		pc, err := Preset(name)
		if err != nil || pc.Providers[0].OAuth2 != nil {
			t.Fatalf("preset %s: %v", name, err)
		}
	}
	for _, name := range []string{"gmail", "outlook"} {
		f := strings.Replace(oauthFile, `name = "gmail"`, `name = "`+name+`"`, 1)
		f = strings.Replace(f, `provider = "gmail"`, `provider = "`+name+`"`, 1)
		c, err := Parse("m.toml", []byte(f))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		p := c.Provider(name)
		for _, u := range []string{p.OAuth2.AuthURL, p.OAuth2.TokenURL} {
			if _, err := p.OAuth2Endpoint(u); err != nil {
				t.Errorf("%s: %v", name, err)
			}
		}
	}
}

func TestOAuth2ConfigErrors(t *testing.T) {
	cases := []struct {
		from, to string
		want     string // in the error
	}{
		{`client_id = "abc"`, ``, `m.toml:5: oauth2.client_id (provider "example"): client_id is required`},
		{`token_url = "https://login.example.com/token"`, `token_url = "https://evil.example.net/token"`, `m.toml:8: oauth2.token_url (provider "example"): provider "example": OAuth2 endpoint host evil.example.net is not in its hosts [mail.example.com login.example.com]: mailproxy connects only to listed hosts`},
		{`token_url = "https://login.example.com/token"`, `token_url = "http://login.example.com/token"`, `not an https URL`},
		{`auth_url = "https://login.example.com/authorize"`, `auth_url = "https://accounts.example.org/a"`, `auth_url`},
		{`scopes = ["https://mail.example.com/"]`, `scope = ["x"]`, `m.toml:10: scope: unknown key in [provider.oauth2] (did you mean "scopes"?)`},
	}
	for _, c := range cases {
		f := strings.Replace(oauthFile, c.from, c.to, 1)
		_, err := Parse("m.toml", []byte(f))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s → %s: got %v, want %q", c.from, c.to, err, c.want)
		}
	}
	// The allowlist refusal is audited by the caller as non_provider_host.
	f := strings.Replace(oauthFile, `"https://login.example.com/token"`, `"https://evil.example.net/token"`, 1)
	_, err := Parse("m.toml", []byte(f))
	var d *policy.Denied
	if !errors.As(err, &d) || d.Reason != policy.ReasonNonProviderHost || d.Host != "evil.example.net" {
		t.Fatalf("no policy refusal behind %v", err)
	}
}

// TestOAuth2InlineTableKeys: the keys of an inline oauth2 = { ... } are
// checked like those of a [provider.oauth2] table: a misspelt one is an
// error at its line, not dropped.
func TestOAuth2InlineTableKeys(t *testing.T) {
	const file = `[[provider]]
name = "example"
hosts = ["mail.example.com", "login.example.com"]
imap = "imaps://mail.example.com:993"
oauth2 = { client_id = "abc", client_secret = "s", auth_url = "https://login.example.com/a", token_url = "https://login.example.com/t", device_auth_url = "https://login.example.com/d", scopes = ["x"] }

[[listen]]
protocol = "imap"
address = "127.0.0.1:1143"
provider = "example"
`
	c, err := Parse("m.toml", []byte(file))
	if err != nil {
		t.Fatal(err)
	}
	if o := c.Provider("example").OAuth2; o == nil || o.ClientSecret != "s" || o.DeviceAuthURL != "https://login.example.com/d" {
		t.Fatalf("%+v", o)
	}
	for _, c := range []struct{ from, to, want string }{
		{`client_secret =`, `client_secrt =`, `m.toml:5: oauth2.client_secrt (provider #1): unknown key in [provider.oauth2] (did you mean "client_secret"?)`},
		{`device_auth_url =`, `device_auth_uri =`, `m.toml:5: oauth2.device_auth_uri (provider #1): unknown key in [provider.oauth2] (did you mean "device_auth_url"?)`},
		{`scopes =`, `x.y = 1, scopes =`, `m.toml:5: oauth2.x.y (provider #1): unknown key in [provider.oauth2]`},
	} {
		_, err := Parse("m.toml", []byte(strings.Replace(file, c.from, c.to, 1)))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want %q", c.to, err, c.want)
		}
	}
	// A misspelt required key is one error, not also "client_id is required".
	_, err = Parse("m.toml", []byte(strings.Replace(file, `client_id =`, `client_di =`, 1)))
	if err == nil || strings.Count(err.Error(), "\n") != 0 || !strings.Contains(err.Error(), `did you mean "client_id"`) {
		t.Errorf("client_di: %v", err)
	}
}
