// Package config reads mailproxy's TOML configuration, checks it strictly,
// and turns it into providers and listeners. Every error names the file, the
// line, the key and the offending value, so that a user can fix it without
// guessing. Built-in presets stand in for a file with `-provider NAME`.
package config

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	toml "github.com/pelletier/go-toml/v2"

	"mailproxy/policy"
	"mailproxy/proxy"
)

// File is the TOML document as written.
type File struct {
	Log      LogEntry        `toml:"log"`
	Limits   LimitsEntry     `toml:"limits"`
	Provider []ProviderEntry `toml:"provider"`
	Listen   []ListenEntry   `toml:"listen"`
	Status   StatusEntry     `toml:"status"`
}

// LogEntry is the [log] table.
type LogEntry struct {
	Audit string `toml:"audit"` // "stderr" (default), "stdout" or a file path
	Level string `toml:"level"` // debug | info (default) | warn | error
}

// LimitsEntry is the [limits] table. Zero values mean the defaults.
type LimitsEntry struct {
	MaxSessions    int    `toml:"max_sessions"`
	MaxPerClient   int    `toml:"max_sessions_per_client"`
	RatePerClient  int    `toml:"sessions_per_minute_per_client"`
	PreauthTimeout string `toml:"preauth_timeout"`
	IdleTimeout    string `toml:"idle_timeout"`
	CommandTimeout string `toml:"command_timeout"`
	DialTimeout    string `toml:"dial_timeout"`
	MaxLine        int    `toml:"max_line"`
	MaxLiteral     int    `toml:"max_literal"`
	MaxPrelogin    int    `toml:"max_prelogin"`
	MaxMessageSize int64  `toml:"max_message_size"`
	MaxRecipients  int    `toml:"max_recipients"`
	MaxHeaderBlock int    `toml:"max_header_block"`
}

// ProviderEntry is one [[provider]].
type ProviderEntry struct {
	Name                  string   `toml:"name"`
	Hosts                 []string `toml:"hosts"`
	Domains               []string `toml:"domains"`
	IMAP                  string   `toml:"imap"`
	POP3                  string   `toml:"pop3"`
	SMTP                  string   `toml:"smtp"`
	CAFile                string   `toml:"ca_file"`
	Pins                  []string `toml:"pins"`
	MinTLS                string   `toml:"min_tls"`
	MaxTLS                string   `toml:"max_tls"`
	AllowPrivateAddresses bool     `toml:"allow_private_addresses"`
	// SOCKS5 and header scrubbing (privacy.go).
	Via            string       `toml:"via"`
	ViaUser        string       `toml:"via_user"`
	ViaPassword    string       `toml:"via_password"`
	Isolate        bool         `toml:"isolate"`
	ViaAllowRemote bool         `toml:"via_allow_remote"`
	ScrubHeaders   *[]string    `toml:"scrub_headers"` // nil: the default
	OAuth2         *OAuth2Entry `toml:"oauth2"`        // oauth2.go
	TOFU           *bool        `toml:"tofu"`          // nil means on
}

// ListenEntry is one [[listen]].
type ListenEntry struct {
	Protocol           string   `toml:"protocol"`
	Address            string   `toml:"address"`
	Provider           string   `toml:"provider"`
	LocalSecurity      string   `toml:"local_security"`
	AllowClients       []string `toml:"allow_clients"`
	AllowPlaintextAuth bool     `toml:"allow_plaintext_auth"`
	MaxSessions        int      `toml:"max_sessions"`
	LocalCert          string   `toml:"local_cert"`
	LocalKey           string   `toml:"local_key"`
}

// known keys of each table, for the unknown-key check.
var knownKeys = map[string][]string{
	"":                {"log", "limits", "provider", "listen", "status"},
	"status":          {"address", "allow_clients"},
	"log":             {"audit", "level"},
	"limits":          {"max_sessions", "max_sessions_per_client", "sessions_per_minute_per_client", "preauth_timeout", "idle_timeout", "command_timeout", "dial_timeout", "max_line", "max_literal", "max_prelogin", "max_message_size", "max_recipients", "max_header_block"},
	"provider":        {"name", "hosts", "domains", "imap", "pop3", "smtp", "ca_file", "pins", "min_tls", "max_tls", "allow_private_addresses", "via", "via_user", "via_password", "isolate", "via_allow_remote", "scrub_headers", "oauth2", "tofu"},
	"listen":          {"protocol", "address", "provider", "local_security", "allow_clients", "allow_plaintext_auth", "max_sessions", "local_cert", "local_key"},
	"provider.oauth2": oauth2Keys,
}

// loopbackAddress reports whether a listener address binds only a
// loopback address.
func loopbackAddress(addr string) bool {
	host, _, _ := net.SplitHostPort(addr)
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// Config is a checked configuration.
type Config struct {
	// Path is the file it came from; empty for a preset.
	Path      string
	AuditPath string // "stderr", "stdout" or a file
	Level     slog.Level
	Limits    proxy.Limits
	Providers []*policy.Provider
	Listeners []*proxy.ListenSpec
	// Status is the status page's listener; nil when there is none.
	Status *Status
}

// Setup is what the proxy serves: the configuration's values, without
// the file's form.
func (c *Config) Setup() proxy.Setup {
	s := proxy.Setup{Providers: c.Providers, Limits: c.Limits}
	for _, l := range c.Listeners {
		s.Listeners = append(s.Listeners, *l)
	}
	return s
}

// Error is one problem in a configuration file.
type Error struct {
	File string
	Line int    // 0 when the problem has no single line
	Key  string // e.g. `min_tls (provider "example")`
	Msg  string
	// Err is a policy refusal behind the problem, if any (an endpoint
	// outside its provider's hosts); the caller audits it.
	Err error

	path string // the key's place in the document ("provider.0.hosts")
}

func (e *Error) Error() string {
	loc := e.File
	if e.Line > 0 {
		loc += ":" + strconv.Itoa(e.Line)
	}
	if e.Key == "" {
		return loc + ": " + e.Msg
	}
	return loc + ": " + e.Key + ": " + e.Msg
}

func (e *Error) Unwrap() error { return e.Err }

// Errors is every problem found in one file.
type Errors []*Error

func (es Errors) Error() string {
	var b strings.Builder
	for i, e := range es {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

// Unwrap lets errors.As find a *policy.Denied behind any of them.
func (es Errors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

// Dir is the user's mailproxy folder: $XDG_CONFIG_HOME/mailproxy, else
// ~/.config/mailproxy. It holds the configuration file and the generated
// local certificate.
func Dir() (string, error) {
	if d := os.Getenv("XDG_CONFIG_HOME"); d != "" {
		return filepath.Join(d, "mailproxy"), nil
	}
	h, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("no folder for mailproxy's files: set XDG_CONFIG_HOME or HOME: %w", err)
	}
	return filepath.Join(h, ".config", "mailproxy"), nil
}

// DataDir is where mailproxy keeps what it learns and is given at run
// time (encrypted OAuth2 grants, trust anchors): $XDG_DATA_HOME/mailproxy,
// else ~/.local/share/mailproxy. Callers create it with mode 0700.
func DataDir() (string, error) {
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "mailproxy"), nil
	}
	h, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("no folder for mailproxy's data: set XDG_DATA_HOME or HOME: %w", err)
	}
	return filepath.Join(h, ".local", "share", "mailproxy"), nil
}

// SystemPath is the machine's configuration file, the last of
// DefaultPaths. The commands' tests point it into a folder of their own,
// so that no test reads the machine's configuration.
var SystemPath = "/etc/mailproxy/mailproxy.toml"

// DefaultPaths are the files tried when no -config is given.
func DefaultPaths() []string {
	var paths []string
	if d, err := Dir(); err == nil {
		paths = append(paths, filepath.Join(d, "mailproxy.toml"))
	}
	return append(paths, SystemPath)
}

// Load reads and checks a configuration file.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, b)
}

// Parse checks a configuration document; name is used in messages and to
// resolve relative paths.
func Parse(name string, data []byte) (*Config, error) {
	// Every problem is reported at once: unknown keys, values of the
	// wrong type, and what build finds in the values that could be read.
	d, errs := index(name, data)
	if d.syntax {
		return nil, errs
	}
	var m map[string]any
	if err := toml.Unmarshal(data, &m); err != nil {
		return nil, append(errs, d.decodeError(err)...)
	}
	var f File
	errs = append(errs, d.decode(m, &f)...)
	c, berrs := d.build(&f)
	for _, e := range berrs {
		if !d.followsFrom(e) {
			errs = append(errs, e)
		}
	}
	if len(errs) > 0 {
		// In the file's order; problems of the whole file last.
		slices.SortStableFunc(errs, func(a, b *Error) int {
			return cmp.Compare(sortLine(a), sortLine(b))
		})
		return nil, errs
	}
	c.Path = name
	return c, nil
}

func sortLine(e *Error) int {
	if e.Line == 0 {
		return math.MaxInt
	}
	return e.Line
}

// Preset returns the configuration of a built-in provider: its endpoints
// behind the default listeners on 127.0.0.1.
func Preset(name string) (*Config, error) {
	for _, p := range presets {
		if p.Name != name {
			continue
		}
		d := newDoc("preset " + name)
		p.OAuth2 = nil // OAuth2 needs the user's client_id, from a file (oauth2.go)
		f := &File{Provider: []ProviderEntry{p}}
		for _, proto := range policy.Protos {
			if p.endpoint(proto) != "" {
				f.Listen = append(f.Listen, ListenEntry{Protocol: string(proto), Address: DefaultListeners[string(proto)], Provider: name})
			}
		}
		c, errs := d.build(f)
		if len(errs) > 0 {
			return nil, errs
		}
		return c, nil
	}
	return nil, fmt.Errorf("no built-in provider %q (known: %s)", name, strings.Join(PresetNames(), ", "))
}

func (p *ProviderEntry) endpoint(proto policy.Proto) string {
	switch proto {
	case policy.IMAP:
		return p.IMAP
	case policy.POP3:
		return p.POP3
	case policy.SMTP:
		return p.SMTP
	}
	return ""
}

// Provider returns the provider named name, or nil.
func (c *Config) Provider(name string) *policy.Provider {
	for _, p := range c.Providers {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// WithProvider narrows c to the provider named name (from the file or a
// preset): for `run -provider NAME -config FILE` and `check`.
func (c *Config) WithProvider(name string) (*Config, error) {
	if p := c.Provider(name); p != nil {
		out := *c
		out.Listeners = slices.DeleteFunc(slices.Clone(c.Listeners), func(l *proxy.ListenSpec) bool { return l.Provider != p })
		return &out, nil
	}
	pc, err := Preset(name)
	if err != nil {
		return nil, err
	}
	out := *c
	out.Providers = pc.Providers
	out.Listeners = pc.Listeners
	return &out, nil
}

// decodeError turns a TOML error index did not catch into an *Error.
func (d *doc) decodeError(err error) Errors {
	var de *toml.DecodeError
	if errors.As(err, &de) {
		row, _ := de.Position()
		msg := de.Error()
		msg = strings.TrimPrefix(msg, "toml: ")
		return Errors{{File: d.file, Line: row, Key: strings.Join(de.Key(), "."), Msg: msg}}
	}
	return Errors{{File: d.file, Msg: err.Error()}}
}

func parseDuration(s string, def time.Duration) (time.Duration, error) {
	if s == "" {
		return def, nil
	}
	v, err := time.ParseDuration(s)
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("%q is not a positive duration like \"60s\" or \"30m\"", s)
	}
	return v, nil
}
