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
// hosts and no endpoints of its own: it takes the preset's hosts and
// endpoints, its domains unless the entry names its own, and, when the
// entry has a [provider.oauth2] table (the user's own registration: a
// preset knows the endpoints and scopes, never a client), the preset's
// OAuth2 endpoints and scopes the table leaves out. Everything else the
// entry says (via, pins, ca_file, min_tls, tofu, ...) is kept, and checked
// like any provider's. Without a client_id, a preset relays passwords (app
// passwords).
func fromPreset(pe *ProviderEntry) {
	if len(pe.Hosts) > 0 || pe.IMAP != "" || pe.POP3 != "" || pe.SMTP != "" {
		return
	}
	for _, p := range presets {
		if p.Name != pe.Name {
			continue
		}
		pe.Hosts = slices.Clone(p.Hosts)
		pe.IMAP, pe.POP3, pe.SMTP = p.IMAP, p.POP3, p.SMTP
		if len(pe.Domains) == 0 {
			pe.Domains = slices.Clone(p.Domains)
		}
		if own := pe.OAuth2; own != nil && p.OAuth2 != nil {
			o := *own
			fill := func(dst *string, v string) {
				if *dst == "" {
					*dst = v
				}
			}
			fill(&o.AuthURL, p.OAuth2.AuthURL)
			fill(&o.TokenURL, p.OAuth2.TokenURL)
			fill(&o.DeviceAuthURL, p.OAuth2.DeviceAuthURL)
			if len(o.Scopes) == 0 {
				o.Scopes = slices.Clone(p.OAuth2.Scopes)
			}
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
