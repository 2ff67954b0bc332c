package devstack

// SetLocalPostgresAddr points the search for a running Postgres elsewhere
// for one test.
func SetLocalPostgresAddr(addr string) (restore func()) {
	old := localPostgresAddr
	localPostgresAddr = addr
	return func() { localPostgresAddr = old }
}

// DevCallbackSecret is devCallbackSecret, for its test.
var DevCallbackSecret = devCallbackSecret
