package daraja

import (
	"encoding/base64"
	"time"
)

// nairobi is East Africa Time. Kenya keeps no daylight saving, so a fixed
// zone is exact and needs no time zone database on the host.
var nairobi = time.FixedZone("EAT", 3*60*60)

// TimestampLayout is Daraja's Timestamp: YYYYMMDDHHmmss.
const TimestampLayout = "20060102150405"

// Timestamp is t as Daraja wants it: YYYYMMDDHHmmss in Africa/Nairobi time.
// Daraja refuses ("Invalid Timestamp") one written in another zone.
func Timestamp(t time.Time) string {
	return t.In(nairobi).Format(TimestampLayout)
}

// ParseTimestamp reads a Daraja timestamp (also a callback's
// TransactionDate) as Nairobi time.
func ParseTimestamp(s string) (time.Time, error) {
	return time.ParseInLocation(TimestampLayout, s, nairobi)
}

// Nairobi is the zone of Daraja's timestamps.
func Nairobi() *time.Location { return nairobi }

// Password is the push and query password: base64 of shortcode, passkey and
// timestamp written one after the other. It is a secret: never log it.
func Password(shortCode, passKey string, ts string) string {
	return base64.StdEncoding.EncodeToString([]byte(shortCode + passKey + ts))
}
