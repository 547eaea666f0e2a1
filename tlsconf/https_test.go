package tlsconf

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"mailproxy/internal/testkit"
	"mailproxy/policy"
)

// The OAuth2 endpoints' client: every connection under the provider's
// policy and audited with proto https; no proxy from the environment, no
// plain http, no redirects followed.
func TestHTTPClient(t *testing.T) {
	p := newPKI(t)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{p.ecdsa}})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/redirect" {
			http.Redirect(w, r, "https://mail.example.net/elsewhere", http.StatusFound)
			return
		}
		fmt.Fprint(w, "ok")
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	// A proxy in the environment is ignored (it would be refused: it is
	// not a provider host, and it does not exist).
	t.Setenv("HTTPS_PROXY", "http://127.0.0.2:9")
	t.Setenv("HTTP_PROXY", "http://127.0.0.2:9")

	a := &testkit.Audit{}
	c := (&Dialer{}).HTTPClient(p.provider(), policy.NewAudit(a, 0).Session("c1", policy.IMAP).As(policy.HTTPS))
	base := "https://" + ln.Addr().String()
	resp, err := c.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.TLS == nil {
		t.Fatalf("status %d", resp.StatusCode)
	}
	tlsEv := a.Find(t, policy.EventUpstreamTLS)
	if len(tlsEv) != 1 || tlsEv[0]["proto"] != "https" || tlsEv[0]["conn"] != "c1" || tlsEv[0]["verified"] != true {
		t.Fatalf("upstream.tls %v", tlsEv)
	}
	resp, err = c.Get(base + "/redirect")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("the redirect was followed: %d", resp.StatusCode)
	}
	if _, err := c.Get("http://" + ln.Addr().String() + "/"); err == nil || !strings.Contains(err.Error(), "https only") {
		t.Fatalf("plain http: %v", err)
	}
	// A host outside the allowlist is refused and audited.
	_, err = c.Get("https://localhost:" + ln.Addr().String()[strings.LastIndexByte(ln.Addr().String(), ':')+1:] + "/")
	var d *policy.Denied
	if !errors.As(err, &d) || d.Reason != policy.ReasonNonProviderHost {
		t.Fatalf("localhost: %v", err)
	}
	if ev := a.Find(t, policy.EventDenied); len(ev) != 1 || ev[0]["proto"] != "https" {
		t.Fatalf("denied %v", ev)
	}
}
