package hello

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// serverHello builds a ServerHello message split into records of at most
// split bytes (0: one record), with a supported_versions extension naming
// sv when sv is not zero.
func serverHello(version, suite uint16, sidLen uint8, sv uint16, split int) []byte {
	body := binary.BigEndian.AppendUint16(nil, version)
	body = append(body, make([]byte, 32)...)
	body = append(body, sidLen)
	body = append(body, bytes.Repeat([]byte{0xaa}, int(sidLen))...)
	body = binary.BigEndian.AppendUint16(body, suite)
	body = append(body, 0)
	if sv != 0 {
		body = append(body, 0, 6, 0x00, 0x2b, 0, 2, byte(sv>>8), byte(sv))
	}
	hs := append([]byte{2, 0, byte(len(body) >> 8), byte(len(body))}, body...)
	if split <= 0 {
		split = len(hs)
	}
	var out []byte
	for len(hs) > 0 {
		n := min(split, len(hs))
		out = append(out, 0x16, 0x03, 0x03, byte(n>>8), byte(n))
		out = append(out, hs[:n]...)
		hs = hs[n:]
	}
	return out
}

// FuzzReadServerHello: the reader of a server's first answer never panics,
// never reads past the record that completes the ServerHello nor more than
// its bounds allow, and returns exactly the version and suite of a
// well-formed ServerHello, however it is split into records.
//
//	go test -run '^$' -fuzz '^FuzzReadServerHello$' -fuzztime 60s ./tlsconf/hello/
func FuzzReadServerHello(f *testing.F) {
	f.Add([]byte{0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28}, uint16(0x0303), uint16(0xc02f), uint8(32), uint16(0), uint8(0))
	f.Add([]byte{0x16, 0x03, 0x03, 0xff, 0xff}, uint16(0x0302), uint16(0xc013), uint8(0), uint16(0x0304), uint8(3))
	f.Add([]byte{0x16, 0x03, 0x03, 0x00, 0x27, 0x02}, uint16(0x0303), uint16(0x009c), uint8(255), uint16(0), uint8(1))
	f.Add([]byte("HTTP/1.1 400 Bad Request\r\n"), uint16(0x0300), uint16(0x0005), uint8(1), uint16(0), uint8(0))
	f.Add(serverHello(0x0303, 0x1301, 32, 0x0304, 7), uint16(0x0301), uint16(0x000a), uint8(16), uint16(0), uint8(40))
	f.Fuzz(func(t *testing.T, raw []byte, version, suite uint16, sidLen uint8, sv uint16, split uint8) {
		r := bytes.NewReader(raw)
		ReadAnswer(r)
		if read := len(raw) - r.Len(); read > 6*maxHello+maxRecord+5 {
			t.Fatalf("ReadAnswer read %d bytes", read)
		}
		if len(raw) > 5 && raw[0] == 0x15 {
			if read := len(raw) - r.Len(); read > 5+int(binary.BigEndian.Uint16(raw[3:5])) {
				t.Fatalf("ReadAnswer read %d bytes past an alert record", read)
			}
		}

		want := sv
		if want == 0 {
			want = version
		}
		hello := serverHello(version, suite, sidLen, sv, int(split))
		a, err := ReadAnswer(bytes.NewReader(append(hello, raw...)))
		switch {
		case sidLen > 32:
			if err == nil {
				t.Fatalf("a session id of %d bytes was accepted: %v", sidLen, a)
			}
		case err != nil || a.Alert || a.Version != want || a.Suite != suite:
			t.Fatalf("ReadAnswer(ServerHello %04x %04x sid %d sv %04x split %d) = %v, %v", version, suite, sidLen, sv, split, a, err)
		}
		// It stops at the end of the ServerHello's last record.
		r = bytes.NewReader(append(hello, raw...))
		ReadAnswer(r)
		if sidLen <= 32 && r.Len() != len(raw) {
			t.Fatalf("ReadAnswer read %d bytes past the ServerHello", len(raw)-r.Len())
		}
	})
}
