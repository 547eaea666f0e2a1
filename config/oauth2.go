package config

import (
	"errors"
	"fmt"
	"slices"

	"mailproxy/policy"
)

// OAuth2Entry is a provider's [provider.oauth2] table.
type OAuth2Entry struct {
	ClientID      string   `toml:"client_id"`
	ClientSecret  string   `toml:"client_secret"`
	AuthURL       string   `toml:"auth_url"`
	TokenURL      string   `toml:"token_url"`
	DeviceAuthURL string   `toml:"device_auth_url"`
	Scopes        []string `toml:"scopes"`
}

var oauth2Keys = []string{"client_id", "client_secret", "auth_url", "token_url", "device_auth_url", "scopes"}

// fromPreset completes a [[provider]] that names a preset and gives no
// hosts and no endpoints of its own: it is the preset, with the file's
// [provider.oauth2] client_id and client_secret (the user's own
// registration; a preset knows the endpoints and scopes, never a client).
// Without a client_id, a preset relays passwords (app passwords).
func fromPreset(pe *ProviderEntry) {
	if len(pe.Hosts) > 0 || pe.IMAP != "" || pe.POP3 != "" || pe.SMTP != "" {
		return
	}
	for _, p := range presets {
		if p.Name != pe.Name {
			continue
		}
		own := pe.OAuth2
		*pe = p
		pe.Hosts = slices.Clone(p.Hosts)
		pe.OAuth2 = own
		if own != nil && p.OAuth2 != nil && own.AuthURL == "" && own.TokenURL == "" && own.DeviceAuthURL == "" && len(own.Scopes) == 0 {
			o := *p.OAuth2
			o.ClientID, o.ClientSecret = own.ClientID, own.ClientSecret
			pe.OAuth2 = &o
		}
		return
	}
}

// oauth2 checks a [provider.oauth2] table and sets p.OAuth2. Every
// endpoint mailproxy dials (token, device authorization) and the
// authorization page the user's browser opens must be https on a host of
// the provider's allowlist.
func (d *doc) oauth2(o *OAuth2Entry, p *policy.Provider, base, who string, add func(*Error)) (ok bool) {
	if o == nil {
		return true
	}
	ok = true
	fail := func(k, format string, args ...any) {
		ok = false
		add(d.at(base+"."+k, k+" ("+who+")", format, args...))
	}
	if o.ClientID == "" {
		fail("oauth2.client_id", "client_id is required: the application you registered with the provider (see the README, \"Gmail and Outlook (OAuth2)\")")
		return false
	}
	for _, u := range []struct{ key, val string }{{"auth_url", o.AuthURL}, {"token_url", o.TokenURL}, {"device_auth_url", o.DeviceAuthURL}} {
		if u.val == "" {
			if u.key != "device_auth_url" {
				fail("oauth2."+u.key, "%s is required", u.key)
				ok = false
			}
			continue
		}
		if _, err := p.OAuth2Endpoint(u.val); err != nil {
			var dn *policy.Denied
			if errors.As(err, &dn) {
				e := d.at(base+".oauth2."+u.key, "oauth2."+u.key+" ("+who+")", "%s: mailproxy connects only to listed hosts", dn.Detail)
				e.Err = err
				add(e)
				ok = false
				continue
			}
			fail("oauth2."+u.key, "%v", err)
		}
	}
	if len(o.Scopes) == 0 {
		fail("oauth2.scopes", "scopes is required: what mailproxy asks the provider for (its mail scope)")
	}
	if ok {
		p.OAuth2 = &policy.OAuth2{ClientID: o.ClientID, ClientSecret: o.ClientSecret, AuthURL: o.AuthURL,
			TokenURL: o.TokenURL, DeviceAuthURL: o.DeviceAuthURL, Scopes: slices.Clone(o.Scopes)}
	}
	return ok
}

// oauth2Table tells the index which sub-table a header names: "oauth2"
// under the last [[provider]].
func oauth2Table(parts []string, providers int) (prefix string, ok bool) {
	if len(parts) != 2 || parts[0] != "provider" || parts[1] != "oauth2" || providers == 0 {
		return "", false
	}
	return fmt.Sprintf("provider.%d.oauth2", providers-1), true
}
