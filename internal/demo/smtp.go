package demo

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"
)

// smtpSession accepts mail from the demo user for anyone and delivers it to
// the demo INBOX.
type smtpSession struct {
	p      *Provider
	authed bool
	from   string
	rcpts  []string
}

var _ gosmtp.AuthSession = (*smtpSession)(nil)

func (s *smtpSession) AuthMechanisms() []string { return []string{sasl.Plain} }

func (s *smtpSession) Auth(mech string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(identity, username, password string) error {
		if username != User || password != Password {
			return gosmtp.ErrAuthFailed
		}
		s.authed = true
		return nil
	}), nil
}

func (s *smtpSession) Mail(from string, _ *gosmtp.MailOptions) error {
	if !s.authed {
		return gosmtp.ErrAuthRequired
	}
	s.from = from
	return nil
}

func (s *smtpSession) Rcpt(to string, _ *gosmtp.RcptOptions) error {
	s.rcpts = append(s.rcpts, to)
	return nil
}

func (s *smtpSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	trace := fmt.Sprintf("Received: from mailproxy by smtp.demo.test; %s\r\n", time.Now().Format(time.RFC1123Z))
	msg := trace + string(b)
	if !strings.HasSuffix(msg, "\r\n") {
		msg += "\r\n"
	}
	return s.p.deliver(msg)
}

func (s *smtpSession) Reset()        { s.from, s.rcpts = "", nil }
func (s *smtpSession) Logout() error { return nil }
