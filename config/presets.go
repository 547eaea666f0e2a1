package config

// Built-in provider presets, used by `-provider NAME` without a file and by
// name from a file's [[listen]] provider. Each one cites the provider's own
// help page for its endpoints; `mailproxy check -provider NAME` shows what
// the servers negotiate today.
var presets = []ProviderEntry{
	{
		// help.runbox.com/email-program-settings/: IMAP mail.runbox.com 993,
		// POP mail.runbox.com 995, SMTP mail.runbox.com 465 (TLS) or 587
		// (STARTTLS). Older client configurations name secure.runbox.com,
		// imap.runbox.com and smtp.runbox.com. Logins are "username" for
		// runbox.com addresses and "username%yourdomain.com" for hosted
		// domains (so a '%' is never a route).
		Name:    "runbox",
		Hosts:   []string{"mail.runbox.com", "secure.runbox.com", "imap.runbox.com", "smtp.runbox.com"},
		Domains: []string{"runbox.com", "runbox.no", "runbox.us", "runbox.eu", "runbox.uk"},
		IMAP:    "imaps://mail.runbox.com:993",
		POP3:    "pop3s://mail.runbox.com:995",
		SMTP:    "smtps://mail.runbox.com:465",
	},
	{
		// fastmail.com/help/technical/servernamesandports.html: IMAP
		// imap.fastmail.com 993, POP pop.fastmail.com 995, SMTP
		// smtp.fastmail.com 465, all TLS ("Enabled, but not STARTTLS").
		// Fastmail requires an app password for these services.
		Name:    "fastmail",
		Hosts:   []string{"imap.fastmail.com", "pop.fastmail.com", "smtp.fastmail.com"},
		Domains: []string{"fastmail.com", "fastmail.fm"},
		IMAP:    "imaps://imap.fastmail.com:993",
		POP3:    "pop3s://pop.fastmail.com:995",
		SMTP:    "smtps://smtp.fastmail.com:465",
	},
	{
		// posteo.de/en/help (email program settings): posteo.de for IMAP
		// 993, POP3 995 and SMTP 465 with TLS (143/110/587 with STARTTLS).
		// This page was not in the reference store when the preset was
		// written: confirm with `mailproxy check -provider posteo`.
		Name:    "posteo",
		Hosts:   []string{"posteo.de"},
		Domains: []string{"posteo.de", "posteo.net", "posteo.org", "posteo.eu", "posteo.at", "posteo.ch"},
		IMAP:    "imaps://posteo.de:993",
		POP3:    "pop3s://posteo.de:995",
		SMTP:    "smtps://posteo.de:465",
	},
	{
		// kb.mailbox.org/en/private/e-mail/e-mail-configuration: IMAP
		// imap.mailbox.org 993, POP3 pop3.mailbox.org 995, SMTP
		// smtp.mailbox.org 465 (or 587 STARTTLS).
		Name:    "mailbox.org",
		Hosts:   []string{"imap.mailbox.org", "pop3.mailbox.org", "smtp.mailbox.org"},
		Domains: []string{"mailbox.org"},
		IMAP:    "imaps://imap.mailbox.org:993",
		POP3:    "pop3s://pop3.mailbox.org:995",
		SMTP:    "smtps://smtp.mailbox.org:465",
	},
	{
		// Google's "Read Gmail messages on other email clients using POP"
		// and "Add Gmail to another email client" pages: imap.gmail.com
		// 993, pop.gmail.com 995, smtp.gmail.com 465 (or 587 STARTTLS).
		// Most accounts refuse plain passwords: use an app password, or
		// OAuth2 with your own client_id (config/oauth2.go). Google's
		// "OAuth 2.0 for Mobile & Desktop Apps": authorization
		// accounts.google.com/o/oauth2/v2/auth, token
		// oauth2.googleapis.com/token, scope https://mail.google.com/
		// for IMAP, POP and SMTP ("OAuth 2.0 Mechanism" of Gmail's IMAP
		// docs). Google's device flow ("OAuth 2.0 for TV and
		// Limited-Input Device Applications") supports a limited set of
		// scopes without Gmail's, so there is no device_auth_url.
		Name:    "gmail",
		Hosts:   []string{"imap.gmail.com", "pop.gmail.com", "smtp.gmail.com", "accounts.google.com", "oauth2.googleapis.com"},
		Domains: []string{"gmail.com", "googlemail.com"},
		IMAP:    "imaps://imap.gmail.com:993",
		POP3:    "pop3s://pop.gmail.com:995",
		SMTP:    "smtps://smtp.gmail.com:465",
		OAuth2: &OAuth2Entry{
			AuthURL:  "https://accounts.google.com/o/oauth2/v2/auth",
			TokenURL: "https://oauth2.googleapis.com/token",
			Scopes:   []string{"https://mail.google.com/"},
		},
	},
	{
		// support.microsoft.com "POP, IMAP, and SMTP settings for
		// Outlook.com": IMAP and POP outlook.office365.com 993/995 (TLS),
		// SMTP smtp-mail.outlook.com 587 (STARTTLS). Outlook.com requires
		// OAuth2 for most accounts; plain passwords (even app passwords)
		// are being withdrawn.
		// Microsoft's "Authenticate an IMAP, POP or SMTP connection using
		// OAuth" (for Microsoft 365 and Outlook.com): the identity
		// platform's v2.0 endpoints on login.microsoftonline.com (tenant
		// "common"), the scopes IMAP.AccessAsUser.All,
		// POP.AccessAsUser.All and SMTP.Send of outlook.office.com, and
		// offline_access for a refresh token; the device authorization
		// grant is supported.
		Name:    "outlook",
		Hosts:   []string{"outlook.office365.com", "smtp-mail.outlook.com", "login.microsoftonline.com"},
		Domains: []string{"outlook.com", "hotmail.com", "live.com", "msn.com"},
		IMAP:    "imaps://outlook.office365.com:993",
		POP3:    "pop3s://outlook.office365.com:995",
		SMTP:    "smtp://smtp-mail.outlook.com:587",
		OAuth2: &OAuth2Entry{
			AuthURL:       "https://login.microsoftonline.com/common/oauth2/v2.0/authorize",
			TokenURL:      "https://login.microsoftonline.com/common/oauth2/v2.0/token",
			DeviceAuthURL: "https://login.microsoftonline.com/common/oauth2/v2.0/devicecode",
			Scopes: []string{"https://outlook.office.com/IMAP.AccessAsUser.All", "https://outlook.office.com/POP.AccessAsUser.All",
				"https://outlook.office.com/SMTP.Send", "offline_access"},
		},
	},
	{
		// Riseup's own client help page (riseup.net/en/email/clients) was
		// not in the reference store when this preset was written. These
		// are the endpoints commonly documented for it: mail.riseup.net,
		// IMAP 993, POP3 995, SMTP 465 (TLS) or 587 (STARTTLS). An older
		// Thunderbird autoconfig file for riseup.net (in a Debian bug
		// report's archive) names imap.riseup.net 143 and mail.riseup.net
		// 587, both STARTTLS, so imap.riseup.net is allowed too. Confirm
		// with `mailproxy check -provider riseup`. Riseup also publishes
		// an onion service; README "Tor and SOCKS5" shows that variant,
		// which needs via.
		Name:    "riseup",
		Hosts:   []string{"mail.riseup.net", "imap.riseup.net"},
		Domains: []string{"riseup.net"},
		IMAP:    "imaps://mail.riseup.net:993",
		POP3:    "pop3s://mail.riseup.net:995",
		SMTP:    "smtps://mail.riseup.net:465",
	},
}

// PresetNames lists the built-in providers.
func PresetNames() []string {
	var n []string
	for _, p := range presets {
		n = append(n, p.Name)
	}
	return n
}

// DefaultListeners are the listeners a preset starts when no file is given.
var DefaultListeners = map[string]string{
	"imap": "127.0.0.1:1143",
	"pop3": "127.0.0.1:1110",
	"smtp": "127.0.0.1:1587",
}
