// Package hello builds TLS ClientHello messages by hand and reads the
// server's first answer to them: its ServerHello (the version and suite it
// chose) or its alert. Go's crypto/tls cannot offer SSLv3, RSA key
// exchange alone, RC4, NULL or EXPORT suites, which is the point: these
// hellos ask a server what it still accepts from other clients.
//
// Nothing here completes a handshake. A caller sends one hello, reads one
// answer, and hangs up; no key is ever derived, no data ever sent.
package hello

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
)

// Protocol versions as they appear on the wire.
const (
	SSLv3 uint16 = 0x0300
	TLS10 uint16 = 0x0301
	TLS11 uint16 = 0x0302
	TLS12 uint16 = 0x0303
	TLS13 uint16 = 0x0304
)

// FallbackSCSV is TLS_FALLBACK_SCSV (RFC 7507): a client that retries with
// a lower version than it supports says so, and a server that supports a
// higher one must refuse with the inappropriate_fallback alert.
const FallbackSCSV uint16 = 0x5600

// Alerts a probe tells apart (RFC 8446 §6, RFC 7507).
const (
	AlertHandshakeFailure      uint8 = 40
	AlertProtocolVersion       uint8 = 70
	AlertInsufficientSecurity  uint8 = 71
	AlertInappropriateFallback uint8 = 86
)

// Hello is a ClientHello to build.
type Hello struct {
	// Version is the legacy client_version field; zero means TLS 1.2.
	Version uint16
	// RecordVersion is the record layer's version; zero means TLS 1.0
	// (what most clients send), or SSLv3 for an SSLv3 hello.
	RecordVersion uint16
	// Suites are offered in this order.
	Suites []uint16
	// ServerName goes in the SNI extension unless it is an IP address or
	// empty.
	ServerName string
	// SupportedVersions, when set, adds the supported_versions extension
	// (and an empty key_share, so that a TLS 1.3 server answers with a
	// HelloRetryRequest naming its version rather than a full handshake).
	SupportedVersions []uint16
	// NoExtensions sends a hello without extensions (SSLv3's form).
	NoExtensions bool
}

// Groups offered: X25519, P-256, P-384, P-521, ffdhe2048, ffdhe3072.
var groups = []uint16{0x001d, 0x0017, 0x0018, 0x0019, 0x0100, 0x0101}

// Signature schemes offered (TLS 1.2), SHA-1 ones included: the hello asks
// what the server accepts, it never verifies anything.
var sigSchemes = []uint16{0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601, 0x0203, 0x0201, 0x0202}

// Marshal returns the hello as one TLS record.
func (h Hello) Marshal() []byte {
	version := h.Version
	if version == 0 {
		version = TLS12
	}
	recVersion := h.RecordVersion
	if recVersion == 0 {
		recVersion = TLS10
		if version == SSLv3 {
			recVersion = SSLv3
		}
	}
	var body []byte
	body = binary.BigEndian.AppendUint16(body, version)
	random := make([]byte, 32)
	rand.Read(random)
	body = append(body, random...)
	body = append(body, 0) // no session id
	body = binary.BigEndian.AppendUint16(body, uint16(2*len(h.Suites)))
	for _, s := range h.Suites {
		body = binary.BigEndian.AppendUint16(body, s)
	}
	body = append(body, 1, 0) // null compression only

	if !h.NoExtensions {
		var ext []byte
		add := func(typ uint16, data []byte) {
			ext = binary.BigEndian.AppendUint16(ext, typ)
			ext = binary.BigEndian.AppendUint16(ext, uint16(len(data)))
			ext = append(ext, data...)
		}
		if _, err := netip.ParseAddr(h.ServerName); err != nil && h.ServerName != "" {
			name := []byte(h.ServerName)
			sni := binary.BigEndian.AppendUint16(nil, uint16(len(name)+3))
			sni = append(sni, 0) // host_name
			sni = binary.BigEndian.AppendUint16(sni, uint16(len(name)))
			add(0x0000, append(sni, name...))
		}
		add(0x000a, list16(groups))
		add(0x000b, []byte{1, 0}) // uncompressed points
		add(0x000d, list16(sigSchemes))
		add(0x0017, nil) // extended_master_secret
		if len(h.SupportedVersions) > 0 {
			sv := []byte{byte(2 * len(h.SupportedVersions))}
			for _, v := range h.SupportedVersions {
				sv = binary.BigEndian.AppendUint16(sv, v)
			}
			add(0x002b, sv)
			add(0x0033, []byte{0, 0}) // key_share: none, ask for a retry
		}
		add(0xff01, []byte{0}) // renegotiation_info, empty
		body = binary.BigEndian.AppendUint16(body, uint16(len(ext)))
		body = append(body, ext...)
	}

	hs := []byte{1, byte(len(body) >> 16), byte(len(body) >> 8), byte(len(body))}
	hs = append(hs, body...)
	rec := []byte{0x16, byte(recVersion >> 8), byte(recVersion), byte(len(hs) >> 8), byte(len(hs))}
	return append(rec, hs...)
}

// list16 is a list of 16-bit values with its 2-byte length prefix.
func list16(vs []uint16) []byte {
	b := binary.BigEndian.AppendUint16(nil, uint16(2*len(vs)))
	for _, v := range vs {
		b = binary.BigEndian.AppendUint16(b, v)
	}
	return b
}

// Answer is the server's first answer to a hello.
type Answer struct {
	// Alert is true when the server answered with an alert; AlertDesc
	// says which.
	Alert     bool
	AlertDesc uint8
	// Version is the version the ServerHello chose: the supported_versions
	// extension's when present (TLS 1.3), else the legacy field.
	Version uint16
	// Suite is the suite the ServerHello chose.
	Suite uint16
	// Retry is true for a HelloRetryRequest (a TLS 1.3 server asking for
	// a key share).
	Retry bool
}

// Accepted reports whether the server chose something (a ServerHello).
func (a Answer) Accepted() bool { return !a.Alert }

func (a Answer) String() string {
	if a.Alert {
		return fmt.Sprintf("alert %d", a.AlertDesc)
	}
	return fmt.Sprintf("ServerHello %04x %04x", a.Version, a.Suite)
}

// maxRecord bounds one record's length (2^14 plus the largest expansion).
const maxRecord = 1<<14 + 2048

// maxHello bounds the ServerHello message gathered across records.
const maxHello = 1 << 16

// ErrNotTLS is an answer that is not a TLS record of a kind a server sends
// first (a plaintext error, an HTTP response).
var ErrNotTLS = errors.New("the answer is not a TLS handshake or alert record")

// ReadAnswer reads the server's answer to a hello: records up to and
// including the first handshake message, which must be a ServerHello, or
// an alert. It reads no further than the record that completes the
// ServerHello, and each record's length is checked before it is read.
func ReadAnswer(r io.Reader) (Answer, error) {
	var msg []byte // handshake bytes gathered so far
	for {
		hdr := make([]byte, 5)
		if _, err := io.ReadFull(r, hdr); err != nil {
			return Answer{}, err
		}
		n := int(binary.BigEndian.Uint16(hdr[3:5]))
		if hdr[1] != 3 {
			return Answer{}, ErrNotTLS
		}
		if n > maxRecord {
			return Answer{}, errors.New("record too long")
		}
		rec := make([]byte, n)
		if _, err := io.ReadFull(r, rec); err != nil {
			return Answer{}, err
		}
		switch hdr[0] {
		case 0x15: // alert
			if len(msg) > 0 || len(rec) < 2 {
				return Answer{}, errors.New("malformed alert")
			}
			return Answer{Alert: true, AlertDesc: rec[1]}, nil
		case 0x16: // handshake
		default:
			return Answer{}, ErrNotTLS
		}
		if len(msg)+len(rec) > maxHello {
			return Answer{}, errors.New("ServerHello too long")
		}
		msg = append(msg, rec...)
		if len(msg) < 4 {
			continue
		}
		if msg[0] != 2 {
			return Answer{}, fmt.Errorf("the first handshake message is type %d, not a ServerHello", msg[0])
		}
		size := int(msg[1])<<16 | int(msg[2])<<8 | int(msg[3])
		if size > maxHello {
			return Answer{}, errors.New("ServerHello too long")
		}
		if len(msg) < 4+size {
			continue
		}
		return parseServerHello(msg[4 : 4+size])
	}
}

// helloRetryRandom marks a HelloRetryRequest (RFC 8446 §4.1.3).
var helloRetryRandom = [32]byte{
	0xcf, 0x21, 0xad, 0x74, 0xe5, 0x9a, 0x61, 0x11, 0xbe, 0x1d, 0x8c, 0x02, 0x1e, 0x65, 0xb8, 0x91,
	0xc2, 0xa2, 0x11, 0x16, 0x7a, 0xbb, 0x8c, 0x5e, 0x07, 0x9e, 0x09, 0xe2, 0xc8, 0xa8, 0x33, 0x9c,
}

// parseServerHello reads a ServerHello body: version, random, session id,
// suite, compression, then optional extensions.
func parseServerHello(b []byte) (Answer, error) {
	short := errors.New("short ServerHello")
	if len(b) < 2+32+1 {
		return Answer{}, short
	}
	a := Answer{Version: binary.BigEndian.Uint16(b[0:2])}
	a.Retry = [32]byte(b[2:34]) == helloRetryRandom
	sid := int(b[34])
	off := 35 + sid
	if sid > 32 || len(b) < off+3 {
		return Answer{}, short
	}
	a.Suite = binary.BigEndian.Uint16(b[off : off+2])
	off += 3 // suite and compression
	if len(b) == off {
		return a, nil
	}
	if len(b) < off+2 {
		return Answer{}, short
	}
	extLen := int(binary.BigEndian.Uint16(b[off : off+2]))
	ext := b[off+2:]
	if len(ext) != extLen {
		return Answer{}, errors.New("ServerHello extensions do not add up")
	}
	for len(ext) > 0 {
		if len(ext) < 4 {
			return Answer{}, short
		}
		typ, n := binary.BigEndian.Uint16(ext[0:2]), int(binary.BigEndian.Uint16(ext[2:4]))
		if len(ext) < 4+n {
			return Answer{}, short
		}
		if typ == 0x002b { // supported_versions: the version chosen
			if n != 2 {
				return Answer{}, errors.New("malformed supported_versions")
			}
			a.Version = binary.BigEndian.Uint16(ext[4:6])
		}
		ext = ext[4+n:]
	}
	return a, nil
}
