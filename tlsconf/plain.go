package tlsconf

import (
	"context"
	"net"
	"time"

	"mailproxy/policy"
)

// DialBeforeTLS connects to endpoint ep of provider p exactly as Dial does
// — allowlist, resolution and address checks, upstream.connect audited,
// the protocol's STARTTLS exchange when the endpoint says so — and stops
// where the TLS handshake would begin. It is for probes that send their
// own ClientHello (`mailproxy check -deep`): the connection must carry
// nothing but that hello, and never a credential. The connection's
// deadline is the dial's (d.Timeout, or ctx's deadline). Refusals are
// audited and returned as *policy.Denied, as with Dial.
func (d *Dialer) DialBeforeTLS(ctx context.Context, p *policy.Provider, ep policy.Endpoint, audit *policy.SessionAudit) (net.Conn, error) {
	c, err := d.dialBeforeTLS(ctx, p, ep, audit)
	if err != nil && audit != nil {
		audit.Denied(err)
	}
	return c, err
}

func (d *Dialer) dialBeforeTLS(ctx context.Context, p *policy.Provider, ep policy.Endpoint, audit *policy.SessionAudit) (net.Conn, error) {
	ctx, cancel := d.limit(ctx)
	defer cancel()
	host := policy.NormalizeHost(ep.Host)
	raw, _, err := d.connect(ctx, p, host, ep, audit)
	if err != nil {
		return nil, err
	}
	dl, ok := ctx.Deadline()
	if !ok {
		dl = time.Now().Add(DefaultTimeout)
	}
	raw.SetDeadline(dl)
	if ep.Security == policy.STARTTLS {
		if err := startTLS(raw, ep.Proto, host, d.EHLOName); err != nil {
			raw.Close()
			return nil, err
		}
	}
	return raw, nil
}
