// Package proxy runs mailproxy's listeners: the accept loop, each
// connection's lifecycle (client allowlist, session limits, deadlines, the
// session.start and session.end audit events), the hand-over to a protocol
// front (proxy/imap, proxy/pop3, proxy/smtp), and the byte relay that splices
// the app to the provider once the login has succeeded.
//
// It never writes credentials or message content anywhere but to the two
// connections it relays between: credentials travel in a Credentials value
// that prints as "***", and the relay counts bytes without looking at them.
package proxy
