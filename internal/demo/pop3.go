package demo

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"strconv"
	"strings"

	goimap "github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"mailproxy/internal/certs"
	"mailproxy/internal/pop3server"
)

// The demo's POP3 service reads the same INBOX as IMAP: each POP3 session
// logs in to the demo IMAP server over TLS and lists, fetches and deletes
// through it, so that the three protocols share one mailbox.

func (p *Provider) startPOP3(tlsConf *tls.Config, ca *certs.CA) error {
	imapAddr := strings.TrimPrefix(p.IMAP, "imaps://")
	clientTLS := &tls.Config{RootCAs: ca.Pool(), ServerName: "127.0.0.1"}
	srv, err := pop3server.New(pop3server.Options{
		Backend: pop3server.BackendFunc(func(user, password string) (pop3server.Mailbox, error) {
			return openIMAPMaildrop(imapAddr, clientTLS, user, password)
		}),
		Greeting: "demo POP3 ready",
	})
	if err != nil {
		return err
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", tlsConf)
	if err != nil {
		return err
	}
	go srv.Serve(ln)
	p.closers = append(p.closers, srv.Close)
	p.POP3 = "pop3s://" + ln.Addr().String()
	return nil
}

// imapMaildrop is a POP3 maildrop backed by the demo INBOX over IMAP.
type imapMaildrop struct {
	c     *imapclient.Client
	count uint32 // messages in INBOX when it was selected
}

func openIMAPMaildrop(addr string, tc *tls.Config, user, password string) (pop3server.Mailbox, error) {
	c, err := imapclient.DialTLS(addr, &imapclient.Options{TLSConfig: tc})
	if err != nil {
		return nil, errors.Join(pop3server.ErrSysTemp, err)
	}
	if err := c.Login(user, password).Wait(); err != nil {
		c.Close()
		return nil, pop3server.ErrAuth
	}
	sel, err := c.Select("INBOX", nil).Wait()
	if err != nil {
		c.Close()
		return nil, errors.Join(pop3server.ErrSysTemp, err)
	}
	return &imapMaildrop{c: c, count: sel.NumMessages}, nil
}

func (m *imapMaildrop) Messages() ([]pop3server.Message, error) {
	// The count from SELECT, not the client's mailbox state, which its
	// reading goroutine updates on its own time.
	if m.count == 0 {
		return nil, nil
	}
	var all goimap.SeqSet
	all.AddRange(1, 0) // 1:*
	msgs, err := m.c.Fetch(all, &goimap.FetchOptions{UID: true, RFC822Size: true}).Collect()
	if err != nil {
		return nil, err
	}
	out := make([]pop3server.Message, 0, len(msgs))
	for _, msg := range msgs {
		out = append(out, pop3server.Message{UID: strconv.FormatUint(uint64(msg.UID), 10), Size: msg.RFC822Size})
	}
	return out, nil
}

func parseUID(uid string) (goimap.UID, error) {
	n, err := strconv.ParseUint(uid, 10, 32)
	return goimap.UID(n), err
}

func (m *imapMaildrop) Open(uid string) (io.ReadCloser, error) {
	u, err := parseUID(uid)
	if err != nil {
		return nil, err
	}
	msgs, err := m.c.Fetch(goimap.UIDSetNum(u), &goimap.FetchOptions{BodySection: []*goimap.FetchItemBodySection{{Peek: true}}}).Collect()
	if err != nil || len(msgs) != 1 || len(msgs[0].BodySection) != 1 {
		return nil, errors.Join(errors.New("demo: message gone"), err)
	}
	return io.NopCloser(bytes.NewReader(msgs[0].BodySection[0].Bytes)), nil
}

func (m *imapMaildrop) Delete(uids []string) error {
	var set goimap.UIDSet
	for _, uid := range uids {
		u, err := parseUID(uid)
		if err != nil {
			return err
		}
		set.AddNum(u)
	}
	if err := m.c.Store(set, &goimap.StoreFlags{Op: goimap.StoreFlagsAdd, Silent: true, Flags: []goimap.Flag{goimap.FlagDeleted}}, nil).Close(); err != nil {
		return err
	}
	return m.c.UIDExpunge(set).Close()
}

func (m *imapMaildrop) Close() error {
	m.c.Logout().Wait()
	return m.c.Close()
}
