package tlsconf

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"
	"time"

	"mailproxy/policy"
)

// HTTPS limits: a provider's OAuth2 endpoints answer small JSON documents
// quickly. golang.org/x/oauth2 reads at most 1 MiB of a response body.
const (
	httpsTimeout        = 30 * time.Second
	maxHTTPSHeaderBytes = 64 << 10
)

// HTTPClient returns an HTTP client for provider p's OAuth2 endpoints
// (token, device authorization). Every connection is made by d.Dial under
// p's policy, exactly as for mail: the host must be on p's allowlist, every
// address is checked, the TLS is the provider's profile (ECDHE only,
// verified, pinned where pins are set), and audit receives upstream.connect
// and upstream.tls (give it an audit trail whose proto is "https") or the
// refusal. No proxy from the environment is used, plain http is refused,
// redirects are not followed, connections are not kept, and a request with
// its response is bounded in time.
func (d *Dialer) HTTPClient(p *policy.Provider, audit *policy.SessionAudit) *http.Client {
	t := &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return nil, errors.New("mailproxy speaks to OAuth2 endpoints over https only")
		},
		DialTLSContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, port, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			n, err := strconv.ParseUint(port, 10, 16)
			if err != nil {
				return nil, err
			}
			ep := policy.Endpoint{Proto: policy.HTTPS, Security: policy.ImplicitTLS, Host: policy.NormalizeHost(host), Port: uint16(n)}
			up, err := d.Dial(ctx, p, ep, audit)
			if err != nil {
				return nil, err
			}
			return up.Conn, nil
		},
		DisableKeepAlives:      true,
		ForceAttemptHTTP2:      false,
		ResponseHeaderTimeout:  httpsTimeout,
		MaxResponseHeaderBytes: maxHTTPSHeaderBytes,
	}
	return &http.Client{
		Transport: t,
		Timeout:   httpsTimeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}
