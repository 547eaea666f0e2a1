package config

import (
	"slices"
	"strings"
	"testing"
)

func privacyConf(extra string) string {
	return `[[provider]]
name = "p"
hosts = ["mail.example.com"]
imap = "imaps://mail.example.com"
` + extra + `
[[listen]]
protocol = "imap"
address = "127.0.0.1:1143"
provider = "p"
`
}

func TestVia(t *testing.T) {
	c, err := Parse("t.toml", []byte(privacyConf(`via = "socks5h://localhost:9050"
isolate = true`)))
	if err != nil {
		t.Fatal(err)
	}
	v := c.Providers[0].Via
	if v == nil || v.String() != "socks5h://127.0.0.1:9050" || !v.RemoteDNS || !v.Isolate {
		t.Fatalf("via = %+v", v)
	}
	c, err = Parse("t.toml", []byte(privacyConf(`via = "socks5://[::1]:1080"
via_user = "u"
via_password = "pw"`)))
	if err != nil {
		t.Fatal(err)
	}
	if v := c.Providers[0].Via; v.RemoteDNS || v.User != "u" || v.Password != "pw" || v.Addr.String() != "[::1]:1080" {
		t.Fatalf("via = %+v", v)
	}
	c, err = Parse("t.toml", []byte(privacyConf(`via = "socks5h://192.168.1.2:9050"
via_allow_remote = true`)))
	if err != nil || !c.Providers[0].Via.AllowRemote {
		t.Fatalf("remote proxy with via_allow_remote: %v", err)
	}

	bad := map[string]string{
		`via = "socks5h://192.168.1.2:9050"`:                                   "not on this machine",
		`via = "http://127.0.0.1:8080"`:                                        "unknown scheme",
		`via = "socks5h://proxy.example.com:9050"`:                             "must be an IP address",
		`via = "socks5h://127.0.0.1"`:                                          "needs a port",
		`via = "socks5h://u:secretpw@127.0.0.1:9050"`:                          "via_user and via_password",
		`isolate = true`:                                                       "isolate needs via",
		`via_user = "u"`:                                                       "via_user needs via",
		"via = \"socks5h://127.0.0.1:9050\"\nisolate = true\nvia_user = \"u\"": "leave via_user and via_password out",
		"via = \"socks5h://127.0.0.1:9050\"\nvia_password = \"x\"":             "via_password needs via_user",
		`scrub_headers = ["X Mailer"]`:                                         "not a header field name",
	}
	for conf, want := range bad {
		_, err := Parse("t.toml", []byte(privacyConf(conf)))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", conf, err, want)
		}
		if err != nil && strings.Contains(err.Error(), "secretpw") {
			t.Errorf("%s: the error shows the password: %v", conf, err)
		}
	}
}

func TestOnionNeedsVia(t *testing.T) {
	onion := `[[provider]]
name = "o"
hosts = ["5gdvpfoh6kb2iqbizb37lzk2ddzrwa47m6rpdueg2m656fovmbhoptqd.onion"]
imap = "imaps://5gdvpfoh6kb2iqbizb37lzk2ddzrwa47m6rpdueg2m656fovmbhoptqd.onion"
%s
[[listen]]
protocol = "imap"
address = "127.0.0.1:1143"
provider = "o"
`
	for via, ok := range map[string]bool{"": false, `via = "socks5://127.0.0.1:9050"`: false, `via = "socks5h://127.0.0.1:9050"`: true} {
		_, err := Parse("t.toml", []byte(strings.Replace(onion, "%s", via, 1)))
		if (err == nil) != ok || err != nil && !strings.Contains(err.Error(), "onion service") {
			t.Errorf("via %q: %v", via, err)
		}
	}
}

func TestScrubHeaders(t *testing.T) {
	for conf, want := range map[string][]string{
		``:                   {"User-Agent", "X-Mailer"},
		`scrub_headers = []`: nil,
		`scrub_headers = ["X-Originating-IP", "User-Agent"]`: {"X-Originating-IP", "User-Agent"},
	} {
		c, err := Parse("t.toml", []byte(privacyConf(conf)))
		if err != nil {
			t.Fatal(err)
		}
		if got := c.Providers[0].ScrubHeaders; !slices.Equal(got, want) {
			t.Errorf("%q: scrub_headers %q, want %q", conf, got, want)
		}
	}
	c, err := Preset("riseup")
	if err != nil {
		t.Fatal(err)
	}
	if p := c.Providers[0]; !slices.Equal(p.ScrubHeaders, DefaultScrubHeaders) || p.Via != nil {
		t.Errorf("riseup preset: %+v", p)
	}
}

func TestMaxHeaderBlock(t *testing.T) {
	c, err := Parse("t.toml", []byte("[limits]\nmax_header_block = 65536\n"+privacyConf("")))
	if err != nil || c.Limits.MaxHeaderBlock != 65536 {
		t.Fatalf("%v, %d", err, c.Limits.MaxHeaderBlock)
	}
	if c, _ := Parse("t.toml", []byte(privacyConf(""))); c.Limits.MaxHeaderBlock != 256<<10 {
		t.Errorf("default %d", c.Limits.MaxHeaderBlock)
	}
	if _, err := Parse("t.toml", []byte("[limits]\nmax_header_block = 100\n"+privacyConf(""))); err == nil {
		t.Error("max_header_block = 100 accepted")
	}
}

// TestSecretValuesNeverShown: a SOCKS password or client secret of the
// wrong type, or inside a URL, is refused without its value in the message.
func TestSecretValuesNeverShown(t *testing.T) {
	doc := `[[provider]]
name = "example"
hosts = ["mail.example.com", "login.example.com"]
imap = "imaps://mail.example.com:993"
via = "socks5h://me:UrlSecret1@127.0.0.1:9050"
via_user = "u"
via_password = 918273645
[provider.oauth2]
client_id = "x"
client_secret = ["ListSecret2"]
auth_url = "https://id:UrlSecret3@login.example.com/a"
token_url = "https://login.example.com/t"
scopes = ["s"]

[[listen]]
protocol = "imap"
address = "127.0.0.1:1143"
provider = "example"
`
	_, err := Parse("m.toml", []byte(doc))
	if err == nil {
		t.Fatal("accepted")
	}
	for _, secret := range []string{"918273645", "ListSecret2", "UrlSecret1", "UrlSecret3"} {
		if strings.Contains(err.Error(), secret) {
			t.Errorf("the message shows %s:\n%v", secret, err)
		}
	}
	for _, key := range []string{"via_password", "oauth2.client_secret", "via ", "auth_url"} {
		if !strings.Contains(err.Error(), key) {
			t.Errorf("no error about %s:\n%v", key, err)
		}
	}
}

// TestURLCredentialsNeverShown: a user name and password written into an
// endpoint, via or OAuth2 URL, whether the URL is refused as a value or
// as a value of the wrong type, never appear in the messages (which a
// reload writes to the audit log).
func TestURLCredentialsNeverShown(t *testing.T) {
	doc := `[[provider]]
name = "ex"
hosts = ["mail.example.com", "login.example.com"]
imap = "imaps://me:Hunter2Secret@mail.example.com:993"
pop3 = "pop3s://me:p%zzsecret2@mail.example.com"
smtp = ["smtps://me:ListSecret3@mail.example.com"]
via = ["socks5h://u:ViaSecret4@127.0.0.1:9050"]
[provider.oauth2]
client_id = "x"
auth_url = 5
token_url = ["https://id:TokenSecret5@login.example.com/t"]
device_auth_url = { u = "https://id:DeviceSecret6@login.example.com/d" }
scopes = ["s"]

[[listen]]
protocol = "imap"
address = "127.0.0.1:1143"
provider = "ex"
`
	_, err := Parse("m.toml", []byte(doc))
	if err == nil {
		t.Fatal("accepted")
	}
	// A key written twice ends decoding: that message shows no value either.
	_, dup := Parse("m.toml", []byte(strings.Replace(doc, "[provider.oauth2]", `via = "socks5h://me:DupSecret7@127.0.0.1:9050"
[provider.oauth2]`, 1)))
	if dup == nil || !strings.Contains(dup.Error(), "already defined") || strings.Contains(dup.Error(), "DupSecret7") {
		t.Errorf("a duplicate via: %v", dup)
	}
	for _, secret := range []string{"Hunter2Secret", "secret2", "ListSecret3", "ViaSecret4", "TokenSecret5", "DeviceSecret6"} {
		if strings.Contains(err.Error(), secret) {
			t.Errorf("the message shows %s:\n%v", secret, err)
		}
	}
	for _, want := range []string{"m.toml:4: imap", "m.toml:5: pop3", "m.toml:6: smtp", "m.toml:7: via", "oauth2.token_url", "oauth2.device_auth_url", "…@mail.example.com"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("no %q in:\n%v", want, err)
		}
	}
}
