package grant

import (
	"bytes"
	"testing"
	"time"
)

// FuzzParseRecord: Parse never panics, accepts one form only (what it
// accepts, Marshal writes back byte for byte), and what it accepts opens
// only with the key it was sealed under.
func FuzzParseRecord(f *testing.F) {
	kdf := KDF{Time: 1, MemoryKiB: 8, Threads: 1}
	r, _, err := Seal("example", "alice@example.test", "refresh-token", "pw", kdf, time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(r.Marshal())
	r.Refreshed = r.Created.Add(time.Hour)
	f.Add(r.Marshal())
	f.Add([]byte(magic + "\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := Parse(data)
		if err != nil {
			return
		}
		if !bytes.Equal(r.Marshal(), data) {
			t.Fatal("accepted a form Marshal does not write")
		}
		if r.KDF.Time > maxKDFTime || r.KDF.MemoryKiB > maxKDFMemory || r.KDF.Threads > maxKDFLanes {
			t.Fatal("accepted unbounded KDF parameters")
		}
		if r.KDF.Time == 1 && r.KDF.MemoryKiB <= 64 {
			// Cheap enough to try: a key of another password never opens.
			if _, err := r.Open(r.DeriveKey("not the password")); err == nil && r.Account == "alice@example.test" {
				t.Fatal("opened with another password")
			}
		}
	})
}
