package tlsconf

import (
	"context"
	"crypto/tls"
	"net"
	"slices"
	"time"

	"mailproxy/policy"
	"mailproxy/tlsconf/hello"
)

// Some servers (Dovecot 2.3 among them) hang up without a TLS alert when
// they share no cipher suite or version with the client, and the policed
// handshake can then only say "EOF". To name the reason, mailproxy sends
// such a server a second, diagnostic ClientHello that offers every common
// suite — the ones the policy forbids included — reads which one the
// server picks, and hangs up. Nothing is ever sent after the ServerHello:
// the diagnostic connection carries no data and no credentials, and its
// verdict is always a refusal.

// probeSuites is what the diagnostic hello offers, strongest first.
var probeSuites = []uint16{
	0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8, // ECDHE AEAD
	0xc009, 0xc00a, 0xc013, 0xc014, 0xc023, 0xc024, 0xc027, 0xc028, // ECDHE CBC
	0x009e, 0x009f, 0xccaa, 0x0033, 0x0039, 0x0067, 0x006b, // DHE
	0x009c, 0x009d, 0x002f, 0x0035, 0x003c, 0x003d, // RSA key exchange
	0xc012, 0x000a, 0xc011, 0x0005, // 3DES, RC4
}

// suiteNames names what Go's crypto/tls does not know (DHE).
var suiteNames = map[uint16]string{
	0x009e: "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256", 0x009f: "TLS_DHE_RSA_WITH_AES_256_GCM_SHA384",
	0xccaa: "TLS_DHE_RSA_WITH_CHACHA20_POLY1305_SHA256", 0x0033: "TLS_DHE_RSA_WITH_AES_128_CBC_SHA",
	0x0039: "TLS_DHE_RSA_WITH_AES_256_CBC_SHA", 0x0067: "TLS_DHE_RSA_WITH_AES_128_CBC_SHA256",
	0x006b: "TLS_DHE_RSA_WITH_AES_256_CBC_SHA256",
}

func suiteName(s uint16) string {
	if n, ok := suiteNames[s]; ok {
		return n
	}
	return tls.CipherSuiteName(s)
}

// diagnose explains a handshake the server ended without an alert, by a
// diagnostic hello on a new connection to the same checked address. It
// returns a more precise refusal, or nil when it learns nothing. The
// connection is audited like any other (upstream.connect).
func (d *Dialer) diagnose(ctx context.Context, addr string, pr *Profile, host string, ep policy.Endpoint, audit *policy.SessionAudit) error {
	var nd net.Dialer
	raw, err := nd.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil
	}
	defer raw.Close()
	if audit != nil {
		audit.UpstreamConnect(host, addr) // every connection is recorded
	}
	dl, ok := ctx.Deadline()
	if !ok {
		dl = time.Now().Add(DefaultTimeout)
	}
	raw.SetDeadline(dl)
	if ep.Security == policy.STARTTLS {
		if startTLS(raw, ep.Proto, host, d.EHLOName) != nil {
			return nil
		}
	}
	if _, err := raw.Write(hello.Hello{ServerName: host, Suites: probeSuites}.Marshal()); err != nil {
		return nil
	}
	ans, err := hello.ReadAnswer(raw)
	if err != nil || ans.Alert {
		return nil
	}
	version, suite := ans.Version, ans.Suite
	switch {
	case version < pr.min():
		return policy.Deny(policy.ReasonTLSVersion, host,
			"the server closed the handshake without an alert; offered everything, it chose %s, below the allowed %s",
			policy.TLSVersionName(version), policy.TLSVersionName(pr.min()))
	case !slices.Contains(pr.Suites(), suite):
		return policy.Deny(policy.ReasonCipher, host,
			"the server closed the handshake without an alert; offered every suite, it chose %s (%s), which the policy never allows",
			suiteName(suite), weakness(suite))
	}
	return nil
}

// weakness says what is wrong with a suite the policy refuses.
func weakness(s uint16) string {
	switch {
	case s >= 0x009c && s <= 0x009d, s == 0x002f, s == 0x0035, s == 0x003c, s == 0x003d, s == 0x000a, s == 0x0005:
		return "RSA key exchange: no forward secrecy"
	case suiteNames[s] != "":
		return "finite-field DHE key exchange"
	}
	return "a legacy cipher"
}
