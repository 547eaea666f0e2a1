// Package pop3server is a small POP3 server (RFC 1939) with the extension
// mechanism (CAPA, RFC 2449), response codes (RFC 2449 §8, RFC 3206), SASL
// PLAIN and LOGIN (RFC 5034) and STLS (RFC 2595). It plays the mail
// provider in mailproxy's tests and in `mailproxy demo`: a Backend supplies
// users, passwords and maildrops, so a demo can plug in its own mailbox
// store.
//
// It is served over implicit TLS (hand Serve a tls.Listener) or over plain
// TCP with STLS (set Options.TLSConfig). On a connection that is not under
// TLS it refuses USER, PASS and AUTH with -ERR [AUTH] unless
// Options.AllowInsecureAuth says otherwise, so a test can prove that a
// client finished STLS before sending credentials.
//
// It never writes a password, a SASL response or message content to its
// error log, and it never removes a message unless the client ended the
// session with QUIT (the UPDATE state of RFC 1939 §6). It is not meant to
// face the Internet: it has no login-failure delays and keeps no state
// between connections beyond what its Backend keeps.
package pop3server
