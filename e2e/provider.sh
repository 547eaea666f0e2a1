#!/bin/sh
# provider.sh — writes the configuration of the private mail provider the
# e2e suite runs on 127.0.0.1: a CA and certificates (openssl), Dovecot
# (IMAP and POP3, implicit TLS and STARTTLS), HAProxy (the PROXY-protocol hop
# in front of Dovecot's STARTTLS listeners, see below), Postfix (submission
# on implicit TLS and STARTTLS, SASL through Dovecot, delivery into the same
# maildirs), and a second Dovecot restricted to TLS 1.2 with RSA key
# exchange. It only writes files under DIR; it starts nothing. The suite
# (provider_test.go) starts the servers as its own children and stops them
# by pid; README.md shows the same commands for running them by hand.
# POSIX sh; needs openssl and the users postfix, dovecot and dovenull that
# Debian's packages create.
#
# Usage: provider.sh configure DIR
#
# Ports and passwords come from the environment (the suite picks free
# ports); passwords are written to the passwd-file only, never printed.
#   E2E_PORT_IMAPS E2E_PORT_IMAP E2E_PORT_IMAP_BACKEND
#   E2E_PORT_POP3S E2E_PORT_POP3 E2E_PORT_POP3_BACKEND
#   E2E_PORT_SMTPS E2E_PORT_SUBMISSION E2E_PORT_RSA_IMAPS
#   E2E_ALICE_PASS E2E_BOB_PASS
#   E2E_MAIL_UID (default 5000): owner of the maildirs (no /etc/passwd entry needed)
#
# Why HAProxy: Dovecot treats a connection whose remote address equals its
# local address (every 127.0.0.1 -> 127.0.0.1 connection) as secured and
# then accepts plaintext logins before STARTTLS. HAProxy relays the
# STARTTLS ports with a PROXY v1 header whose source is 192.0.2.25 (TEST-NET-1,
# a label only: no packet goes there), so Dovecot sees a remote client and
# refuses plaintext authentication until STARTTLS, as a real provider would.
set -eu

# quiet runs a command and shows its output only when it fails.
quiet() {
	out=$("$@" 2>&1) || {
		st=$?
		printf '%s\n' "$out" >&2
		return $st
	}
}

usage() {
	echo "usage: provider.sh configure DIR" >&2
	exit 2
}

[ $# -eq 2 ] || usage
[ "$1" = configure ] || usage
dir=$2

: "${E2E_PORT_IMAPS:?} ${E2E_PORT_IMAP:?} ${E2E_PORT_IMAP_BACKEND:?}"
: "${E2E_PORT_POP3S:?} ${E2E_PORT_POP3:?} ${E2E_PORT_POP3_BACKEND:?}"
: "${E2E_PORT_SMTPS:?} ${E2E_PORT_SUBMISSION:?} ${E2E_PORT_RSA_IMAPS:?}"
# (tested without expanding them, so that even "sh -x" does not show them)
test "${E2E_ALICE_PASS+set}" = set || { echo "provider.sh: E2E_ALICE_PASS is not set" >&2; exit 2; }
test "${E2E_BOB_PASS+set}" = set || { echo "provider.sh: E2E_BOB_PASS is not set" >&2; exit 2; }
uid=${E2E_MAIL_UID:-5000}

case $dir in
/*) ;;
*) dir=$(pwd)/$dir ;;
esac
mkdir -p "$dir"
# Dovecot's and Postfix's unprivileged processes walk these paths.
chmod 755 "$dir"

umask 022
mkdir -p "$dir/tls" "$dir/dovecot/run" "$dir/dovecot/state" \
	"$dir/dovecot-rsa/run" "$dir/dovecot-rsa/state" \
	"$dir/postfix/queue" "$dir/haproxy" \
	"$dir/mail/provider.test"

### TLS: a CA and two server certificates (ECDSA for the provider, RSA for
### the restricted Dovecot), for 127.0.0.1, localhost and mail.provider.test.
tls=$dir/tls
san="subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:mail.provider.test"
quiet openssl req -x509 -new -noenc -days 30 \
	-newkey ec -pkeyopt ec_paramgen_curve:P-256 \
	-keyout "$tls/ca.key" -out "$tls/ca.pem" \
	-subj "/O=mailproxy e2e/CN=mailproxy e2e CA" \
	-addext "basicConstraints=critical,CA:TRUE" \
	-addext "keyUsage=critical,keyCertSign,cRLSign"
issue() { # name keyusage keyspec...
	name=$1
	usage=$2
	shift 2
	quiet openssl req -new -noenc "$@" \
		-keyout "$tls/$name.key" -out "$tls/$name.csr" \
		-subj "/O=mailproxy e2e/CN=mail.provider.test"
	quiet openssl x509 -req -in "$tls/$name.csr" -days 30 \
		-CA "$tls/ca.pem" -CAkey "$tls/ca.key" -CAcreateserial \
		-extfile /dev/stdin -out "$tls/$name.pem" <<-EXT
		$san
		basicConstraints=critical,CA:FALSE
		extendedKeyUsage=serverAuth
		keyUsage=critical,$usage
	EXT
	rm -f "$tls/$name.csr"
}
issue server digitalSignature -newkey ec -pkeyopt ec_paramgen_curve:P-256
# keyEncipherment: RSA key exchange encrypts the premaster secret to this key.
issue rsa digitalSignature,keyEncipherment -newkey rsa:2048
chmod 644 "$tls"/*.pem
chmod 600 "$tls"/*.key

### Users: one passwd-file for Dovecot's passdb and userdb.
mail=$dir/mail/provider.test
umask 077
{
	printf '%s\n' "alice@provider.test:{PLAIN}$E2E_ALICE_PASS:$uid:$uid::$mail/alice::"
	printf '%s\n' "bob@provider.test:{PLAIN}$E2E_BOB_PASS:$uid:$uid::$mail/bob::"
} >"$dir/dovecot/users"
umask 022
chown root:dovecot "$dir/dovecot/users"
chmod 640 "$dir/dovecot/users"

### Dovecot, the provider's IMAP and POP3.
dovecot_common() { # instance-name dir certificate-name
	cat <<-CONF
	# Written by e2e/provider.sh: a private Dovecot for the mailproxy e2e suite.
	instance_name = mailproxy-e2e-$1
	base_dir = $2/run
	state_dir = $2/state
	log_path = $2/dovecot.log
	listen = 127.0.0.1
	shutdown_clients = yes
	ssl_cert = <$tls/$3.pem
	ssl_key = <$tls/$3.key
	disable_plaintext_auth = yes
	auth_mechanisms = plain login
	auth_verbose = yes
	auth_failure_delay = 0
	first_valid_uid = $uid
	last_valid_uid = $uid
	passdb {
	  driver = passwd-file
	  args = scheme=PLAIN username_format=%u $dir/dovecot/users
	}
	userdb {
	  driver = passwd-file
	  args = username_format=%u $dir/dovecot/users
	}
	mail_location = maildir:~/Maildir
	namespace inbox {
	  inbox = yes
	  separator = /
	}
	# The login line tells whether the login came over TLS (%c: "TLS",
	# "secured" or nothing) and what TLS (%k).
	login_log_format_elements = user=<%u> method=%m rip=%r lip=%l mpid=%e %c %k session=<%{session}>
	CONF
}

{
	dovecot_common main "$dir/dovecot" server
	cat <<-CONF
	protocols = imap pop3
	ssl = required
	ssl_min_protocol = TLSv1.2
	# Behind HAProxy (see the top of provider.sh).
	haproxy_trusted_networks = 127.0.0.1/32
	# Log every ID field an IMAP client sends, so that the suite can prove
	# that the app's ID never reaches the provider.
	imap_id_log = *
	mailbox_idle_check_interval = 1 secs
	mail_plugins = \$mail_plugins zlib
	protocol imap {
	  mail_plugins = \$mail_plugins imap_zlib
	}
	protocol pop3 {
	  pop3_uidl_format = %08Xu%08Xv
	}
	service imap-login {
	  inet_listener imap {
	    address = 127.0.0.1
	    port = $E2E_PORT_IMAP_BACKEND
	    haproxy = yes
	  }
	  inet_listener imaps {
	    address = 127.0.0.1
	    port = $E2E_PORT_IMAPS
	    ssl = yes
	  }
	}
	service pop3-login {
	  inet_listener pop3 {
	    address = 127.0.0.1
	    port = $E2E_PORT_POP3_BACKEND
	    haproxy = yes
	  }
	  inet_listener pop3s {
	    address = 127.0.0.1
	    port = $E2E_PORT_POP3S
	    ssl = yes
	  }
	}
	# No auth penalty (Dovecot's growing delay after failed logins from
	# one address): the wrong-password scenarios fail logins on purpose.
	service anvil {
	  unix_listener anvil-auth-penalty {
	    mode = 0
	  }
	}
	# Postfix authenticates submission clients through this socket.
	service auth {
	  unix_listener auth-postfix {
	    mode = 0660
	    user = postfix
	    group = postfix
	  }
	}
	CONF
} >"$dir/dovecot/dovecot.conf"

# The restricted Dovecot: TLS 1.2 only (its OpenSSL configuration caps the
# version; Dovecot 2.3 has no ssl_max_protocol), RSA key exchange only.
cat >"$dir/dovecot-rsa/openssl.cnf" <<-CONF
openssl_conf = default_conf
[default_conf]
ssl_conf = ssl_sect
[ssl_sect]
system_default = system_default_sect
[system_default_sect]
MinProtocol = TLSv1.2
MaxProtocol = TLSv1.2
CONF
{
	dovecot_common rsa "$dir/dovecot-rsa" rsa
	cat <<-CONF
	protocols = imap
	ssl = required
	ssl_min_protocol = TLSv1.2
	ssl_cipher_list = AES128-GCM-SHA256:AES256-GCM-SHA384:AES128-SHA:AES256-SHA
	ssl_prefer_server_ciphers = yes
	import_environment = \$import_environment OPENSSL_CONF=$dir/dovecot-rsa/openssl.cnf
	service imap-login {
	  inet_listener imap {
	    port = 0
	  }
	  inet_listener imaps {
	    address = 127.0.0.1
	    port = $E2E_PORT_RSA_IMAPS
	    ssl = yes
	  }
	}
	service pop3-login {
	  inet_listener pop3 {
	    port = 0
	  }
	}
	CONF
} >"$dir/dovecot-rsa/dovecot.conf"

### HAProxy: the PROXY-protocol hop in front of Dovecot's STARTTLS ports.
cat >"$dir/haproxy/haproxy.cfg" <<-CONF
# Written by e2e/provider.sh. Run in the foreground: haproxy -db -f THIS
global
  maxconn 200
defaults
  mode tcp
  timeout connect 5s
  timeout client 30m
  timeout server 30m
frontend imap
  bind 127.0.0.1:$E2E_PORT_IMAP
  tcp-request connection set-src ipv4(192.0.2.25)
  default_backend dovecot_imap
backend dovecot_imap
  server dovecot 127.0.0.1:$E2E_PORT_IMAP_BACKEND send-proxy
frontend pop3
  bind 127.0.0.1:$E2E_PORT_POP3
  tcp-request connection set-src ipv4(192.0.2.25)
  default_backend dovecot_pop3
backend dovecot_pop3
  server dovecot 127.0.0.1:$E2E_PORT_POP3_BACKEND send-proxy
CONF

### Postfix: submission only, delivering provider.test into the maildirs
### Dovecot serves, and nothing anywhere else.
pf=$dir/postfix
cat >"$pf/main.cf" <<-CONF
# Written by e2e/provider.sh: a private Postfix for the mailproxy e2e suite.
compatibility_level = 3.6
queue_directory = $pf/queue
data_directory = $pf/data
maillog_file = $pf/postfix.log
maillog_file_prefixes = $pf
mail_owner = postfix
setgid_group = postdrop
myhostname = mail.provider.test
mydomain = provider.test
myorigin = provider.test
mydestination =
mynetworks = 127.0.0.1/32
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
# Nothing leaves the machine, and nothing is looked up in the DNS.
relayhost =
default_transport = error:mail for other domains is not delivered by the e2e provider
relay_transport = error:mail for other domains is not delivered by the e2e provider
smtp_dns_support_level = disabled
lmtp_dns_support_level = disabled
smtpd_peername_lookup = no
alias_maps =
alias_database =
local_recipient_maps =
biff = no
# Delivery: provider.test into DIR/mail/provider.test/USER/Maildir/.
virtual_mailbox_domains = provider.test
virtual_mailbox_base = $dir/mail
virtual_mailbox_maps = texthash:$pf/vmailbox
virtual_uid_maps = static:$uid
virtual_gid_maps = static:$uid
virtual_minimum_uid = $uid
virtual_mailbox_limit = 0
message_size_limit = 52428800
# Submission: TLS, then SASL through Dovecot, then relay to provider.test.
smtpd_tls_cert_file = $tls/server.pem
smtpd_tls_key_file = $tls/server.key
smtpd_tls_loglevel = 1
smtpd_tls_auth_only = yes
smtpd_tls_mandatory_protocols = >=TLSv1.2
smtpd_tls_protocols = >=TLSv1.2
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = $dir/dovecot/run/auth-postfix
smtpd_sasl_authenticated_header = no
smtpd_relay_restrictions = permit_sasl_authenticated, reject
smtpd_recipient_restrictions = permit_sasl_authenticated, reject
smtpd_client_restrictions =
smtpd_helo_restrictions =
smtpd_sender_restrictions =
CONF
printf '%s\n' "alice@provider.test provider.test/alice/Maildir/" \
	"bob@provider.test provider.test/bob/Maildir/" >"$pf/vmailbox"
cat >"$pf/master.cf" <<-CONF
# Written by e2e/provider.sh. Nothing runs chrooted. There is no smtp or
# relay client service at all: this Postfix cannot send mail anywhere.
127.0.0.1:$E2E_PORT_SMTPS inet n - n - - smtpd
  -o syslog_name=postfix/smtps
  -o smtpd_tls_wrappermode=yes
  -o smtpd_tls_security_level=encrypt
127.0.0.1:$E2E_PORT_SUBMISSION inet n - n - - smtpd
  -o syslog_name=postfix/submission
  -o smtpd_tls_security_level=encrypt
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
CONF

chown -R "$uid:$uid" "$dir/mail"
