package tlsconf

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"time"

	"mailproxy/policy"
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

// clientHello builds a TLS 1.2 ClientHello offering probeSuites.
func clientHello(host string) []byte {
	var body []byte
	body = append(body, 0x03, 0x03) // client_version TLS 1.2
	random := make([]byte, 32)
	rand.Read(random)
	body = append(body, random...)
	body = append(body, 0) // no session id
	body = binary.BigEndian.AppendUint16(body, uint16(2*len(probeSuites)))
	for _, s := range probeSuites {
		body = binary.BigEndian.AppendUint16(body, s)
	}
	body = append(body, 1, 0) // null compression only

	var ext []byte
	addExt := func(typ uint16, data []byte) {
		ext = binary.BigEndian.AppendUint16(ext, typ)
		ext = binary.BigEndian.AppendUint16(ext, uint16(len(data)))
		ext = append(ext, data...)
	}
	if net.ParseIP(host) == nil && host != "" {
		name := []byte(host)
		sni := binary.BigEndian.AppendUint16(nil, uint16(len(name)+3))
		sni = append(sni, 0) // host_name
		sni = binary.BigEndian.AppendUint16(sni, uint16(len(name)))
		addExt(0x0000, append(sni, name...))
	}
	addExt(0x000a, []byte{0, 8, 0x00, 0x1d, 0x00, 0x17, 0x00, 0x18, 0x01, 0x00}) // x25519, P-256, P-384, ffdhe2048
	addExt(0x000b, []byte{1, 0})                                                 // uncompressed points
	sigs := []uint16{0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601, 0x0203, 0x0201}
	sa := binary.BigEndian.AppendUint16(nil, uint16(2*len(sigs)))
	for _, s := range sigs {
		sa = binary.BigEndian.AppendUint16(sa, s)
	}
	addExt(0x000d, sa)
	addExt(0xff01, []byte{0}) // renegotiation_info, empty
	body = binary.BigEndian.AppendUint16(body, uint16(len(ext)))
	body = append(body, ext...)

	hs := []byte{1, byte(len(body) >> 16), byte(len(body) >> 8), byte(len(body))}
	hs = append(hs, body...)
	rec := []byte{0x16, 0x03, 0x01, byte(len(hs) >> 8), byte(len(hs))}
	return append(rec, hs...)
}

// readServerHello reads the server's answer to clientHello: the version and
// suite it chose, or the alert it sent.
func readServerHello(r io.Reader) (version, suite uint16, err error) {
	hdr := make([]byte, 5)
	if _, err := io.ReadFull(r, hdr); err != nil {
		return 0, 0, err
	}
	n := int(binary.BigEndian.Uint16(hdr[3:5]))
	if n > 1<<14+2048 {
		return 0, 0, errors.New("record too long")
	}
	rec := make([]byte, n)
	if _, err := io.ReadFull(r, rec); err != nil {
		return 0, 0, err
	}
	switch {
	case hdr[0] == 0x15 && len(rec) >= 2:
		return 0, 0, fmt.Errorf("alert %d", rec[1])
	case hdr[0] != 0x16 || len(rec) < 4+2+32+1 || rec[0] != 2:
		return 0, 0, errors.New("not a ServerHello")
	}
	version = binary.BigEndian.Uint16(rec[4:6])
	sid := int(rec[4+2+32])
	off := 4 + 2 + 32 + 1 + sid
	if len(rec) < off+2 {
		return 0, 0, errors.New("short ServerHello")
	}
	return version, binary.BigEndian.Uint16(rec[off : off+2]), nil
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
	if _, err := raw.Write(clientHello(host)); err != nil {
		return nil
	}
	version, suite, err := readServerHello(raw)
	if err != nil {
		return nil
	}
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
