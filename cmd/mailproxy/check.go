package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"

	"mailproxy/config"
	"mailproxy/policy"
	"mailproxy/tlsconf"
)

// checkResult is one endpoint's verdict, as printed.
type checkResult struct {
	Endpoint   string `json:"endpoint"`
	OK         bool   `json:"ok"`
	TLSVersion string `json:"tls_version,omitempty"`
	Cipher     string `json:"cipher,omitempty"`
	Group      string `json:"group,omitempty"`
	Subject    string `json:"subject,omitempty"`
	Issuer     string `json:"issuer,omitempty"`
	Expires    string `json:"expires,omitempty"`
	Pin        string `json:"pin,omitempty"`
	Anchor     string `json:"anchor_sha256,omitempty"`
	TOFU       string `json:"tofu,omitempty"`
	Reason     string `json:"reason,omitempty"`
	Detail     string `json:"detail,omitempty"`
	Error      string `json:"error,omitempty"`

	// Deep is what -deep's probes found (deep.go).
	Deep *deepResult `json:"deep,omitempty"`
}

type checkTarget struct {
	provider *policy.Provider
	endpoint policy.Endpoint
}

type checkFlags struct {
	fs                               *flag.FlagSet
	path, provider, proto            *string
	asJSON, implicit, starttls, deep *bool
	timeout                          *time.Duration
}

func newCheckFlags(stderr io.Writer) *checkFlags {
	fs := newFlags("check", stderr)
	return &checkFlags{fs: fs,
		path:     fs.String("config", "", "configuration file (default: the first of the default locations that exists, as for run)"),
		provider: fs.String("provider", "", "check only this provider's endpoints (from the file, else built-in)"),
		asJSON:   fs.Bool("json", false, "print one JSON object per endpoint"),
		implicit: fs.Bool("tls", false, "HOST:PORT arguments speak TLS from the first byte (the default)"),
		starttls: fs.Bool("starttls", false, "HOST:PORT arguments need STARTTLS (give -proto)"),
		proto:    fs.String("proto", "imap", "protocol of HOST:PORT arguments for -starttls: imap, pop3 or smtp"),
		timeout:  fs.Duration("timeout", 15*time.Second, "time allowed per endpoint"),
		deep:     fs.Bool("deep", false, "also ask each endpoint what it accepts from other clients (SSLv3 ... EXPORT, fallback SCSV; deep.go)"),
	}
}

func checkCmd(args []string, stdout, stderr io.Writer) int {
	f := newCheckFlags(stderr)
	fs, path, provider, asJSON, implicit, starttls, proto, timeout, deepProbe := f.fs, f.path, f.provider, f.asJSON, f.implicit, f.starttls, f.proto, f.timeout, f.deep
	if code, ok := parseFlags("check", fs, args, stdout, stderr); !ok {
		return code
	}
	if !checkEnvironment(stderr) {
		return exitUsage
	}
	if *implicit && *starttls {
		fmt.Fprintln(stderr, "mailproxy check: -tls and -starttls exclude each other")
		return exitUsage
	}
	p, err := policy.ParseProto(*proto)
	if err != nil {
		fmt.Fprintln(stderr, "mailproxy check:", err)
		return exitUsage
	}

	// The configuration is found as run finds it. HOST:PORT arguments need
	// none: without one they are checked under the default policy.
	c, err := loadConfig(*path, *provider)
	if err != nil {
		var none *noConfigError
		if fs.NArg() == 0 || !errors.As(err, &none) {
			reportConfigError(err, stderr)
			return exitUsage
		}
		c = nil
	}
	if c != nil && *provider != "" {
		// -provider narrows the check to that provider.
		p := c.Provider(*provider)
		if p == nil {
			fmt.Fprintf(stderr, "mailproxy check: no provider named %q\n", *provider)
			return exitUsage
		}
		narrowed := *c
		narrowed.Providers = []*policy.Provider{p}
		c = &narrowed
	}
	var targets []checkTarget
	if fs.NArg() > 0 {
		sec := policy.ImplicitTLS
		if *starttls {
			sec = policy.STARTTLS
		}
		for _, hp := range fs.Args() {
			t, err := adHocTarget(c, hp, p, sec)
			if err != nil {
				fmt.Fprintln(stderr, "mailproxy check:", err)
				return exitUsage
			}
			targets = append(targets, t)
		}
	} else {
		for _, pr := range c.Providers {
			for _, proto := range policy.Protos {
				if ep, ok := pr.Endpoint(proto); ok {
					targets = append(targets, checkTarget{pr, ep})
				}
			}
		}
	}

	d := &tlsconf.Dialer{Timeout: *timeout, Trust: trustOrNil()}
	code := exitOK
	enc := json.NewEncoder(stdout)
	audit := policy.Discard()
	if *deepProbe {
		// check's stdout is its report (JSON with -json): an audit
		// configured to go to stdout goes to stderr here.
		a, closer, err := deepAudit(c, stderr, stderr)
		if err != nil {
			fmt.Fprintln(stderr, "mailproxy check:", err)
			return exitFailure
		}
		defer closer.Close()
		defer a.Close()
		audit = a
	}
	for i, t := range targets {
		r := checkOne(d, t)
		if !r.OK {
			code = exitFailure
		}
		if *deepProbe {
			r.Deep = runDeep(d, t, audit, i+1)
		}
		if *asJSON {
			enc.Encode(r)
		} else {
			printCheck(stdout, r)
			if r.Deep != nil {
				printDeep(stdout, r.Deep)
			}
		}
	}
	return code
}

// adHocTarget makes a target of a HOST:PORT argument: under the policy of a
// configured provider whose hosts list it, else under the default policy.
func adHocTarget(c *config.Config, hp string, proto policy.Proto, sec policy.Security) (checkTarget, error) {
	host, port, err := net.SplitHostPort(hp)
	if err != nil {
		return checkTarget{}, fmt.Errorf("%q is not HOST:PORT", hp)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 {
		return checkTarget{}, fmt.Errorf("%q: bad port", hp)
	}
	ep := policy.Endpoint{Proto: proto, Security: sec, Host: policy.NormalizeHost(host), Port: uint16(n)}
	if c != nil {
		for _, p := range c.Providers {
			if p.Allows(ep.Host) {
				return checkTarget{p, ep}, nil
			}
		}
	}
	return checkTarget{&policy.Provider{Name: ep.Host, Hosts: []string{ep.Host}}, ep}, nil
}

func checkOne(d *tlsconf.Dialer, t checkTarget) checkResult {
	r := checkResult{Endpoint: t.endpoint.String()}
	up, err := d.Dial(context.Background(), t.provider, t.endpoint, nil)
	if err != nil {
		var den *policy.Denied
		if errors.As(err, &den) {
			r.Reason, r.Detail = string(den.Reason), den.Detail
		} else {
			r.Error = err.Error()
		}
		return r
	}
	defer up.Close()
	cs := up.ConnectionState()
	leaf := cs.PeerCertificates[0]
	r.OK = true
	r.TLSVersion = policy.TLSVersionName(cs.Version)
	r.Cipher = tls.CipherSuiteName(cs.CipherSuite)
	r.Group = policy.GroupName(cs.CurveID)
	r.Subject = leaf.Subject.String()
	r.Issuer = leaf.Issuer.String()
	r.Expires = leaf.NotAfter.UTC().Format(time.RFC3339)
	r.Pin = tlsconf.FormatPin(tlsconf.SPKIHash(leaf))
	r.Anchor, r.TOFU = up.Facts.AnchorSHA256, up.Facts.TOFU
	return r
}

func printCheck(w io.Writer, r checkResult) {
	if !r.OK {
		if r.Reason != "" {
			fmt.Fprintf(w, "%s  FAIL  reason=%s\n  detail       %s\n", r.Endpoint, r.Reason, r.Detail)
		} else {
			fmt.Fprintf(w, "%s  FAIL  error\n  error        %s\n", r.Endpoint, r.Error)
		}
		return
	}
	fmt.Fprintf(w, "%s  PASS\n", r.Endpoint)
	fmt.Fprintf(w, "  tls_version  %s\n  cipher       %s\n  group        %s\n", r.TLSVersion, r.Cipher, r.Group)
	fmt.Fprintf(w, "  subject      %s\n  issuer       %s\n  expires      %s\n  pin          %s\n", r.Subject, r.Issuer, r.Expires, r.Pin)
	fmt.Fprintf(w, "  anchor       %s\n  tofu         %s\n", r.Anchor, r.TOFU)
}
