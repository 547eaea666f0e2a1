package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strconv"

	"mailproxy/config"
	"mailproxy/policy"
	"mailproxy/tlsconf"
	"mailproxy/tlsconf/deep"
)

// deepResult is `check -deep`'s object for one endpoint: true means the
// server accepts that (for fallback_scsv: honours it).
type deepResult struct {
	SSLv3          bool   `json:"sslv3"`
	TLS10          bool   `json:"tls1_0"`
	TLS11          bool   `json:"tls1_1"`
	RSAKeyExchange bool   `json:"rsa_kx"`
	DHE            bool   `json:"dhe"`
	TripleDES      bool   `json:"3des"`
	RC4            bool   `json:"rc4"`
	CBC            bool   `json:"cbc"`
	NULL           bool   `json:"null"`
	Export         bool   `json:"export"`
	FallbackSCSV   bool   `json:"fallback_scsv"`
	PreferredSuite string `json:"preferred_suite"`
	// Verdict is the one-line verdict; Unknown the probes that learned
	// nothing (their booleans are false and mean nothing); Error ends the
	// probes (a policy refusal, audited).
	Verdict string   `json:"verdict"`
	Unknown []string `json:"unknown,omitempty"`
	Error   string   `json:"error,omitempty"`

	report *deep.Report
}

// deepAudit is where the probes' connections are recorded: the
// configuration's audit sink (stderr without one), as `run` would.
func deepAudit(c *config.Config, stdout, stderr io.Writer) (*policy.Audit, io.Closer, error) {
	if c == nil {
		return policy.NewAudit(stderr, slog.LevelInfo), io.NopCloser(nil), nil
	}
	return openAudit(c, stdout, stderr)
}

// runDeep probes one endpoint; n numbers the audit's conn field.
func runDeep(d *tlsconf.Dialer, t checkTarget, audit *policy.Audit, n int) *deepResult {
	sa := audit.Session("check-deep-"+strconv.Itoa(n), t.endpoint.Proto)
	defer sa.FlushDenied() // no session.end: the count of refusals not written, if any
	rep, err := deep.Run(context.Background(), d, t.provider, t.endpoint, sa)
	r := &deepResult{report: rep}
	if err != nil {
		r.Error = err.Error()
		return r
	}
	set := map[string]*bool{
		deep.SSLv3: &r.SSLv3, deep.TLS10: &r.TLS10, deep.TLS11: &r.TLS11, deep.RSAKeyExchange: &r.RSAKeyExchange,
		deep.DHE: &r.DHE, deep.TripleDES: &r.TripleDES, deep.RC4: &r.RC4, deep.CBC: &r.CBC, deep.NULL: &r.NULL,
		deep.Export: &r.Export, deep.FallbackSCSV: &r.FallbackSCSV,
	}
	for _, x := range rep.Results {
		if x.Err != nil {
			r.Unknown = append(r.Unknown, x.Name)
			continue
		}
		if b, ok := set[x.Name]; ok {
			*b = x.Accepted
		}
		if x.Name == deep.Preferred && x.Accepted {
			r.PreferredSuite = deep.SuiteName(x.Suite)
		}
	}
	r.Verdict = rep.Verdict()
	return r
}

func printDeep(w io.Writer, r *deepResult) {
	fmt.Fprintln(w, "  deep probes  (hand-built ClientHellos; no handshake completed, no login)")
	if r.report != nil {
		for _, x := range r.report.Results {
			fmt.Fprintf(w, "    %-16s %s\n", x.Name, deepLine(x))
		}
	}
	if r.Error != "" {
		fmt.Fprintf(w, "  verdict      none: %s\n", r.Error)
		return
	}
	fmt.Fprintf(w, "  verdict      %s\n", r.Verdict)
}

func deepLine(x deep.Result) string {
	chosen := ""
	if x.Version != 0 {
		chosen = policy.TLSVersionName(x.Version) + " " + deep.SuiteName(x.Suite)
	}
	note := ""
	if x.Note != "" {
		note = " (" + x.Note + ")"
	}
	switch {
	case x.Err != nil:
		return "unknown   (" + x.Err.Error() + ")"
	case x.Name == deep.Preferred && x.Accepted:
		return chosen
	case x.Name == deep.Preferred:
		return "none     " + note
	case x.Name == deep.FallbackSCSV && x.Accepted:
		return "honoured " + note
	case x.Name == deep.FallbackSCSV:
		return "IGNORED  " + note
	case x.Accepted:
		return "accepted  " + chosen
	}
	return "refused  " + note
}
