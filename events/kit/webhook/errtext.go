package webhook

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
)

// The texts an attempt's error is recorded and served as: a few fixed
// ones, never the error itself, which may name the resolver's or another
// internal address ("lookup x on 10.255.255.53:53"), or the receiver's
// own. The worker logs the detail.
const (
	ErrTextDNS         = "dns: the host name does not resolve"
	ErrTextTimeout     = "timeout: no answer in time"
	ErrTextTLS         = "tls: the handshake failed (certificate or protocol)"
	ErrTextConnRefused = "connection: refused"
	ErrTextClosed      = "connection: closed before an answer"
	ErrTextConnection  = "connection: failed"
	ErrTextRequest     = "request: the URL cannot be read"
	ErrTextSigning     = "signing: the endpoint's secret does not open"
	ErrTextBreakerOpen = "breaker open: not attempted, retries spent"
	ErrTextBusy        = "endpoint busy: not attempted, retries spent"
	// ErrTextOther stands for a stored text that is none of these (one
	// recorded by an older worker).
	ErrTextOther = "error: the details are in the worker's log"
	// refusedPrefix, then the refused network's name (refused's what).
	refusedPrefix = "refused address: "
)

// ErrSigning marks an attempt not made because its secret did not open.
var ErrSigning = errors.New("signing secret")

var (
	errResolve = errors.New("resolve")
	errRequest = errors.New(ErrTextRequest)
)

// Describe is the fixed text recorded for an attempt's error ("" for nil).
func Describe(err error) string {
	if err == nil {
		return ""
	}
	var r *refusal
	var dnsErr *net.DNSError
	var netErr net.Error
	switch {
	case errors.As(err, &r):
		return refusedPrefix + r.what
	case errors.Is(err, ErrSigning):
		return ErrTextSigning
	case errors.Is(err, errRequest):
		return ErrTextRequest
	case errors.Is(err, errResolve), errors.As(err, &dnsErr):
		return ErrTextDNS
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		return ErrTextTimeout
	case isTLS(err):
		return ErrTextTLS
	case errors.Is(err, syscall.ECONNREFUSED):
		return ErrTextConnRefused
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return ErrTextClosed
	}
	return ErrTextConnection
}

func isTLS(err error) bool {
	var (
		rec     tls.RecordHeaderError
		alert   tls.AlertError
		verify  *tls.CertificateVerificationError
		unknown x509.UnknownAuthorityError
		host    x509.HostnameError
		invalid x509.CertificateInvalidError
	)
	return errors.As(err, &rec) || errors.As(err, &alert) || errors.As(err, &verify) ||
		errors.As(err, &unknown) || errors.As(err, &host) || errors.As(err, &invalid) ||
		strings.Contains(err.Error(), "tls: ")
}

// PublicErrorText is a stored attempt error as it may be served: itself
// when it is one of the fixed texts, else ErrTextOther.
func PublicErrorText(stored string) string {
	switch stored {
	case "", ErrTextDNS, ErrTextTimeout, ErrTextTLS, ErrTextConnRefused, ErrTextClosed,
		ErrTextConnection, ErrTextRequest, ErrTextSigning, ErrTextBreakerOpen, ErrTextBusy:
		return stored
	}
	if what, ok := strings.CutPrefix(stored, refusedPrefix); ok {
		for _, r := range refused {
			if r.what == what {
				return stored
			}
		}
		if what == "no address" {
			return stored
		}
	}
	return ErrTextOther
}
