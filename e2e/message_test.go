//go:build e2e

package e2e

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"mime"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// message is a test message as the app sends it.
type message struct {
	msgid   string // with angle brackets
	subject string // decoded
	raw     []byte // CRLF line ends
	file    string // raw for swaks (see newMessage)
	rawFile string // raw as it is
}

// subjectText is the UTF-8 subject of the test messages.
const subjectText = "Grüße aus Köln — 日本語のテスト ✓"

// newMessage makes a message from one user to another with a UTF-8
// subject (RFC 2047), an 8-bit UTF-8 text part holding lines that need
// SMTP dot-stuffing, and, if attach > 0, an attachment of attach random
// bytes.
func newMessage(t *testing.T, from, to user, tag string, attach int) *message {
	t.Helper()
	id := fmt.Sprintf("%s-%d-%08x", tag, time.Now().UnixNano(), rand.Uint32())
	m := &message{msgid: "<" + id + "@e2e.provider.test>", subject: subjectText + " " + id}
	var b bytes.Buffer
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\r\n", args...) }
	w("From: Alice <%s>", from.name)
	w("To: Bob <%s>", to.name)
	w("Subject: %s", mime.BEncoding.Encode("UTF-8", m.subject))
	w("Date: %s", time.Now().Format(time.RFC1123Z))
	w("Message-ID: %s", m.msgid)
	w("MIME-Version: 1.0")
	const boundary = "e2e-boundary-7f3a9c"
	w("Content-Type: multipart/mixed; boundary=%q", boundary)
	w("")
	w("--%s", boundary)
	w("Content-Type: text/plain; charset=utf-8")
	w("Content-Transfer-Encoding: 8bit")
	w("")
	w("Hallo Bob, grüß dich! Ünïcödé in the body: ✓ ½ €.")
	w(".a line that starts with a dot (SMTP dot-stuffing)")
	w(".")
	w("..two dots")
	w("The end.")
	if attach > 0 {
		w("--%s", boundary)
		w("Content-Type: application/octet-stream; name=\"blob.bin\"")
		w("Content-Transfer-Encoding: base64")
		w("Content-Disposition: attachment; filename=\"blob.bin\"")
		w("")
		data := make([]byte, attach)
		r := rand.NewChaCha8([32]byte{'e', '2', 'e'})
		r.Read(data)
		enc := base64.StdEncoding.EncodeToString(data)
		for len(enc) > 76 {
			w("%s", enc[:76])
			enc = enc[76:]
		}
		w("%s", enc)
	}
	w("--%s--", boundary)
	m.raw = b.Bytes()
	m.file = filepath.Join(t.TempDir(), "message.eml")
	// swaks ends DATA with CRLF "." CRLF after the file's content, so the
	// file leaves out the message's last CRLF.
	if err := os.WriteFile(m.file, bytes.TrimSuffix(m.raw, []byte("\r\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	m.rawFile = m.file + ".raw"
	if err := os.WriteFile(m.rawFile, m.raw, 0o644); err != nil {
		t.Fatal(err)
	}
	return m
}

// smallMessage is a message without an attachment.
func smallMessage(t *testing.T, from, to user, tag string) *message {
	return newMessage(t, from, to, tag, 0)
}
