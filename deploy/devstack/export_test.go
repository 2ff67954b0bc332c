package devstack

// SetLocalPostgresAddr points the search for a running Postgres elsewhere
// for one test.
func SetLocalPostgresAddr(addr string) (restore func()) {
	old := localPostgresAddr
	localPostgresAddr = addr
	return func() { localPostgresAddr = old }
}

// SetEmbeddedPostgresNoSync runs the Postgres the dev stack starts itself
// with fsync off, or on, for one test.
func SetEmbeddedPostgresNoSync(noSync bool) (restore func()) {
	old := embeddedPGNoSync
	embeddedPGNoSync = noSync
	return func() { embeddedPGNoSync = old }
}

// DevCallbackSecret is devCallbackSecret, for its test.
var DevCallbackSecret = devCallbackSecret
