// Package demo is the throwaway mail provider behind `mailproxy demo`: IMAP,
// POP3 and SMTP on 127.0.0.1, each behind TLS from a CA made for the run,
// one user and a few messages. Mail submitted over SMTP lands in the same
// INBOX that IMAP and POP3 read. It exists so that a newcomer can see the
// whole product work with no account and no network; nothing in it is
// meant for real mail.
package demo

import (
	"crypto/tls"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"time"

	goimap "github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"
	gosmtp "github.com/emersion/go-smtp"

	"mailproxy/internal/certs"
)

// The demo account. It is printed for the user to paste; it protects
// nothing but a mailbox that disappears with the process.
const (
	User     = "demo"
	Password = "demo"
	Address  = "demo@demo.test"
)

// Provider is a running demo provider.
type Provider struct {
	// Dir holds the CA certificate (CAFile) and a sample message.
	Dir    string
	CAFile string
	// SampleMessage is a file with a message to submit.
	SampleMessage string
	// IMAP, POP3 and SMTP are the endpoint URLs (implicit TLS).
	IMAP, POP3, SMTP string

	user    *imapmemserver.User
	closers []func() error
}

// Start starts the demo provider on free ports of 127.0.0.1.
func Start() (p *Provider, err error) {
	dir, err := os.MkdirTemp("", "mailproxy-demo-")
	if err != nil {
		return nil, err
	}
	p = &Provider{Dir: dir}
	defer func() {
		if err != nil {
			p.Close()
		}
	}()
	p.closers = append(p.closers, func() error { return os.RemoveAll(dir) })

	ca, err := certs.NewCA("mailproxy demo CA (throwaway)")
	if err != nil {
		return nil, err
	}
	if p.CAFile, err = ca.WriteFile(dir); err != nil {
		return nil, err
	}
	cert, err := ca.Issue(certs.Leaf{Names: []string{"127.0.0.1", "localhost"}})
	if err != nil {
		return nil, err
	}
	tlsConf := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}

	if err := p.startIMAP(tlsConf); err != nil {
		return nil, err
	}
	if err := p.startSMTP(tlsConf); err != nil {
		return nil, err
	}
	if err := p.startPOP3(tlsConf, ca); err != nil {
		return nil, err
	}
	p.SampleMessage = filepath.Join(dir, "hello.eml")
	sample := "From: Demo <demo@demo.test>\r\nTo: Demo <demo@demo.test>\r\nSubject: Hello through mailproxy\r\n\r\nThis message went app -> mailproxy (plaintext on localhost) -> provider (policed TLS).\r\n"
	if err := os.WriteFile(p.SampleMessage, []byte(sample), 0o644); err != nil {
		return nil, err
	}
	return p, nil
}

// Close stops every server and removes the files.
func (p *Provider) Close() error {
	var errs []error
	for i := len(p.closers) - 1; i >= 0; i-- {
		errs = append(errs, p.closers[i]())
	}
	return errors.Join(errs...)
}

// welcome are the messages the INBOX starts with.
var welcome = []string{
	"From: mailproxy <noreply@demo.test>\r\nTo: Demo <demo@demo.test>\r\nSubject: Welcome to the mailproxy demo\r\nDate: Thu, 26 Nov 2026 12:00:00 +0000\r\nMessage-ID: <welcome@demo.test>\r\n\r\nYou are reading this through mailproxy.\r\nYour app spoke plaintext to 127.0.0.1; mailproxy spoke TLS to the provider\r\nand wrote every routing and TLS decision to its audit log.\r\n.A line that starts with a dot survives the trip.\r\n",
	"From: mailproxy <noreply@demo.test>\r\nTo: Demo <demo@demo.test>\r\nSubject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe_=E2=80=94_a_UTF-8_subject?=\r\nDate: Thu, 26 Nov 2026 12:01:00 +0000\r\nMessage-ID: <utf8@demo.test>\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGrüße aus dem Demo-Postfach. ✉\r\n",
}

type literal struct{ *strings.Reader }

func (l literal) Size() int64 { return int64(l.Len()) }

// deliver appends a message to the demo INBOX.
func (p *Provider) deliver(msg string) error {
	_, err := p.user.Append("INBOX", literal{strings.NewReader(msg)}, &goimap.AppendOptions{Time: time.Now()})
	return err
}

func (p *Provider) startIMAP(tlsConf *tls.Config) error {
	mem := imapmemserver.New()
	p.user = imapmemserver.NewUser(User, Password)
	for _, mbox := range []string{"INBOX", "Sent", "Drafts", "Trash"} {
		if err := p.user.Create(mbox, nil); err != nil {
			return err
		}
	}
	for _, m := range welcome {
		if err := p.deliver(m); err != nil {
			return err
		}
	}
	mem.AddUser(p.user)
	srv := imapserver.New(&imapserver.Options{
		NewSession: func(*imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			return mem.NewSession(), nil, nil
		},
		Caps:   goimap.CapSet{goimap.CapIMAP4rev1: {}, goimap.CapIMAP4rev2: {}, goimap.CapLiteralPlus: {}, goimap.CapMove: {}, goimap.CapUIDPlus: {}},
		Logger: quietLogger{},
	})
	ln, err := tls.Listen("tcp", "127.0.0.1:0", tlsConf)
	if err != nil {
		return err
	}
	go srv.Serve(ln)
	p.closers = append(p.closers, srv.Close)
	p.IMAP = "imaps://" + ln.Addr().String()
	return nil
}

// quietLogger drops the demo servers' own logs: the demo shows mailproxy's
// audit log, not the provider's.
type quietLogger struct{}

func (quietLogger) Printf(string, ...any) {}
func (quietLogger) Println(...any)        {}

func (p *Provider) startSMTP(tlsConf *tls.Config) error {
	srv := gosmtp.NewServer(gosmtp.BackendFunc(func(c *gosmtp.Conn) (gosmtp.Session, error) {
		return &smtpSession{p: p}, nil
	}))
	srv.Domain = "smtp.demo.test"
	srv.MaxMessageBytes = 25 << 20
	srv.MaxRecipients = 50
	srv.ReadTimeout = time.Minute
	srv.WriteTimeout = time.Minute
	srv.ErrorLog = quietLogger{}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", tlsConf)
	if err != nil {
		return err
	}
	go srv.Serve(ln)
	p.closers = append(p.closers, srv.Close)
	p.SMTP = "smtps://" + ln.Addr().String()
	return nil
}
