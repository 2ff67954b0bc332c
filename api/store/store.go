// Package store is stkgate's Postgres read model: the stk_pushes table, its
// embedded migrations, the projector's idempotent writes (Apply) and the
// api's reads (Get).
//
// Only the projector writes the table, and only from events; a row can be
// rebuilt at any time by replaying the STK stream into an empty database.
package store

import (
	"context"
	"database/sql"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	neturl "net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq" // the "postgres" driver
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/stkgate/stkgate/events"
)

// ErrNotFound is returned by Get for an unknown tracking id, and for one
// that belongs to another client: a client cannot learn that it exists.
var ErrNotFound = errors.New("record not found")

// Pool limits of Open. The projector holds one connection per batch and the
// api one per request; more connections than this only queue in Postgres.
// Every connection a burst opened stays for the next one (until
// connMaxIdleTime): an idle limit below the open one closed connections
// after each burst and opened them again at the next, a Postgres backend
// started each time.
const (
	maxOpenConns    = 16
	maxIdleConns    = maxOpenConns
	connMaxIdleTime = 5 * time.Minute
	connMaxLifetime = 30 * time.Minute
	openPingTimeout = 10 * time.Second
)

// Open connects to the Postgres at url (postgres://… or key=value form) with
// the lib/pq driver and checks it answers. It does not migrate.
func Open(ctx context.Context, url string) (*sqlx.DB, error) {
	db, err := sqlx.Open("postgres", url)
	if err != nil {
		return nil, fmt.Errorf("open database: %w", hideURL(err))
	}
	db.SetMaxOpenConns(maxOpenConns)
	db.SetMaxIdleConns(maxIdleConns)
	db.SetConnMaxIdleTime(connMaxIdleTime)
	db.SetConnMaxLifetime(connMaxLifetime)

	ctx, cancel := context.WithTimeout(ctx, openPingTimeout)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open database: %w", hideURL(err))
	}
	return db, nil
}

// OpenMigrated is Open, then Migrate: the database a service or the admin
// command works on, its schema brought up to date. On an error nothing is
// left open.
func OpenMigrated(ctx context.Context, url string) (*sqlx.DB, error) {
	db, err := Open(ctx, url)
	if err != nil {
		return nil, err
	}
	if err := Migrate(ctx, db.DB); err != nil {
		_ = db.Close()
		return nil, err
	}
	return db, nil
}

// hideURL drops the URL from a URL parse error: it may hold a password.
func hideURL(err error) error {
	var uerr *neturl.Error
	if errors.As(err, &uerr) {
		return fmt.Errorf("malformed database URL: %w", uerr.Err)
	}
	return err
}

//go:embed migrations/*.sql
var migrations embed.FS

// migrationLockID is the advisory lock Migrate holds, distinct from goose's
// default so that another goose user of the same database does not wait on
// stkgate's migrations or the other way round.
const migrationLockID int64 = 0x73746b6761746500 // "stkgate\x00"

// migrationTable records which migrations have run.
const migrationTable = "stkgate_schema_migrations"

// MigrationTable is migrationTable, for those who read the version
// (stkgate-admin rebuild-read-model).
const MigrationTable = migrationTable

// Migrate brings the schema up to date. Every service that uses the database
// calls it at start-up; a Postgres session lock makes concurrent starters
// wait for one another instead of racing.
//
// A migration runs to its end whatever ctx's deadline: an index built
// CONCURRENTLY waits for every transaction open on its table, and cut off
// by a start-up deadline it would leave an invalid index for the next start
// to begin again, for ever. Only ctx's cancellation (the service stopping)
// cuts a migration off.
func Migrate(ctx context.Context, db *sql.DB) error {
	ctx, stop := cancelOnly(ctx)
	defer stop()
	fsys, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	// Poll for the lock every second for up to five minutes: a slow
	// migration on another instance is the only reason to wait that long.
	locker, err := lock.NewPostgresSessionLocker(
		lock.WithLockID(migrationLockID),
		lock.WithLockTimeout(1, 300),
		lock.WithUnlockTimeout(1, 60),
	)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, fsys,
		goose.WithSessionLocker(locker),
		goose.WithTableName(migrationTable),
		goose.WithDisableGlobalRegistry(true),
	)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	return nil
}

// cancelOnly is ctx without its deadline: it ends when ctx is cancelled
// (or stop is called), not when ctx times out.
func cancelOnly(ctx context.Context) (_ context.Context, stop func()) {
	out, cancel := context.WithCancel(context.WithoutCancel(ctx))
	unwatch := context.AfterFunc(ctx, func() {
		if errors.Is(ctx.Err(), context.Canceled) {
			cancel()
		}
	})
	return out, func() {
		unwatch()
		cancel()
	}
}

// Record is one payment as a client sees it when polling.
type Record struct {
	ID                  int64
	TrackingID          string
	Client              string
	PhoneNumber         string // 254XXXXXXXXX
	Amount              int64
	Reference           string
	Tag                 string // "" when none
	Status              int    // events.StatusPending or events.StatusFinal
	StatusLabel         string // events.Outcome(ResponseCode)
	ResponseCode        string // "" while pending
	ResponseDescription string
	TransactionCode     string // M-Pesa receipt, on success
	MerchantRequestID   string
	CheckoutRequestID   string
	TransactionDate     string // events.TransactionDateLayout, East Africa Time; "" when none
	Stage               int    // StageRequested, StageDispatched or StageCompleted
	Source              string // who decided the outcome; "" while pending
	// LateResult is Daraja's own outcome learnt after stkgate had
	// finished the payment with a stkgate.* code (stk.late_result); nil
	// when none came. It never changes the outcome above.
	LateResult *LateResult
	CreatedAt  time.Time
	UpdatedAt  time.Time
}

// LateResult is an stk.late_result as the read model keeps it (the
// late_result column, jsonb).
type LateResult struct {
	ResponseCode        string    `json:"response_code"`
	ResponseDescription string    `json:"response_description,omitempty"`
	StatusLabel         string    `json:"-"` // events.Outcome(ResponseCode), derived on read
	TransactionCode     string    `json:"transaction_code,omitempty"`
	TransactionDate     string    `json:"transaction_date,omitempty"`
	MerchantRequestID   string    `json:"merchant_request_id,omitempty"`
	CheckoutRequestID   string    `json:"checkout_request_id,omitempty"`
	Source              string    `json:"source,omitempty"`
	FollowsCode         string    `json:"follows_result_code,omitempty"`
	LearntAt            time.Time `json:"learnt_at"`
}

// LateResultOf is l as a record shows it.
func LateResultOf(l events.LateResult) *LateResult {
	r := &LateResult{
		ResponseCode:        l.ResultCode,
		ResponseDescription: l.ResultDesc,
		TransactionCode:     l.Receipt,
		TransactionDate:     l.TransactionDate,
		MerchantRequestID:   l.MerchantRequestID,
		CheckoutRequestID:   l.CheckoutRequestID,
		Source:              l.Source,
		FollowsCode:         l.FollowsCode,
		LearntAt:            l.LearntAt.UTC(),
	}
	_, r.StatusLabel = events.Outcome(r.ResponseCode)
	return r
}

// Stages of a record, in the state order the projector enforces: an event of
// a lower stage never changes what a higher one wrote.
const (
	StageRequested  = 0
	StageDispatched = 1
	StageCompleted  = 2
)

// row is a stk_pushes row as lib/pq scans it.
type row struct {
	ID                  int64          `db:"id"`
	TrackingID          string         `db:"tracking_id"`
	Client              string         `db:"client"`
	PhoneNumber         string         `db:"phone_number"`
	Amount              int64          `db:"amount"`
	Reference           string         `db:"reference"`
	Tag                 sql.NullString `db:"tag"`
	Status              int            `db:"status"`
	ResponseCode        sql.NullString `db:"response_code"`
	ResponseDescription sql.NullString `db:"response_description"`
	TransactionCode     sql.NullString `db:"transaction_code"`
	MerchantRequestID   sql.NullString `db:"merchant_request_id"`
	CheckoutRequestID   sql.NullString `db:"checkout_request_id"`
	TransactionDate     sql.NullString `db:"transaction_date"`
	Stage               int            `db:"stage"`
	Source              sql.NullString `db:"source"`
	LateResult          sql.NullString `db:"late_result"`
	CreatedAt           time.Time      `db:"created_at"`
	UpdatedAt           time.Time      `db:"updated_at"`
}

const selectColumns = `id, tracking_id, client, phone_number, amount, reference, tag,
	status, response_code, response_description, transaction_code,
	merchant_request_id, checkout_request_id, transaction_date, stage, source,
	late_result, created_at, updated_at`

// dests are pointers to r's fields, in selectColumns' order: the poll's
// read scans into them directly, without sqlx's mapping of column names
// to fields, which it made again for every row.
func (r *row) dests() []any {
	return []any{&r.ID, &r.TrackingID, &r.Client, &r.PhoneNumber, &r.Amount, &r.Reference, &r.Tag,
		&r.Status, &r.ResponseCode, &r.ResponseDescription, &r.TransactionCode,
		&r.MerchantRequestID, &r.CheckoutRequestID, &r.TransactionDate, &r.Stage, &r.Source,
		&r.LateResult, &r.CreatedAt, &r.UpdatedAt}
}

// scanRow is a row with its scan destinations made once: Get takes one
// from scanRows rather than allocating the row and the 19 destinations on
// every poll. Every column is scanned into every time (a NULL clears its
// NullString), so nothing of the row before shows through; Get copies the
// row out (record) before it gives it back.
type scanRow struct {
	row
	dest []any
}

var scanRows = sync.Pool{New: func() any {
	r := new(scanRow)
	r.dest = r.row.dests()
	return r
}}

func (r row) record() (Record, error) {
	// The label is derived on read, not stored, so the one status table in
	// events is the only place it is decided.
	_, label := events.Outcome(r.ResponseCode.String)
	var late *LateResult
	if r.LateResult.Valid {
		late = new(LateResult)
		if err := json.Unmarshal([]byte(r.LateResult.String), late); err != nil {
			return Record{}, fmt.Errorf("record %s: late_result: %w", r.TrackingID, err)
		}
		_, late.StatusLabel = events.Outcome(late.ResponseCode)
	}
	return Record{
		ID:                  r.ID,
		TrackingID:          r.TrackingID,
		Client:              r.Client,
		PhoneNumber:         r.PhoneNumber,
		Amount:              r.Amount,
		Reference:           r.Reference,
		Tag:                 r.Tag.String,
		Status:              r.Status,
		StatusLabel:         label,
		ResponseCode:        r.ResponseCode.String,
		ResponseDescription: r.ResponseDescription.String,
		TransactionCode:     r.TransactionCode.String,
		MerchantRequestID:   r.MerchantRequestID.String,
		CheckoutRequestID:   r.CheckoutRequestID.String,
		TransactionDate:     r.TransactionDate.String,
		Stage:               r.Stage,
		Source:              r.Source.String,
		LateResult:          late,
		CreatedAt:           r.CreatedAt.UTC(),
		UpdatedAt:           r.UpdatedAt.UTC(),
	}, nil
}

// Store reads and writes the read model.
type Store struct {
	db  *sqlx.DB
	log *slog.Logger
	// SearchTimeout bounds a Search on the server's side; 0 is
	// DefaultSearchTimeout.
	SearchTimeout time.Duration
	// get is Get's query prepared (prepared), nil until the first Get
	// prepares it; upsert is Apply's upsert, prepared by its first batch.
	get, upsert atomic.Pointer[sql.Stmt]
	// alwaysTx: apply never sends a batch as a lone statement (tests).
	alwaysTx bool
}

// New returns a Store over db, which must be migrated (see Migrate). It
// logs to slog's default logger; see WithLogger.
func New(db *sqlx.DB) *Store { return &Store{db: db, log: slog.Default()} }

// WithLogger sets where the Store logs (the completions Apply rewrote) and
// returns s.
func (s *Store) WithLogger(log *slog.Logger) *Store {
	if log != nil {
		s.log = log
	}
	return s
}

// Ping checks that the database answers, for readiness probes.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.db.PingContext(ctx); err != nil {
		return fmt.Errorf("ping database: %w", err)
	}
	return nil
}

// Get returns client's record of trackingID. An unknown id, a malformed one
// and another client's id are all ErrNotFound.
func (s *Store) Get(ctx context.Context, client, trackingID string) (Record, error) {
	id, err := uuid.Parse(trackingID)
	if err != nil || client == "" {
		return Record{}, ErrNotFound
	}
	r := scanRows.Get().(*scanRow)
	defer scanRows.Put(r)
	if stmt := s.prepared(ctx, &s.get, getQuery); stmt != nil {
		err = stmt.QueryRowContext(ctx, id.String(), client).Scan(r.dest...)
	} else {
		err = s.db.QueryRowContext(ctx, getQuery, id.String(), client).Scan(r.dest...)
	}
	if errors.Is(err, sql.ErrNoRows) {
		return Record{}, ErrNotFound
	}
	if err != nil {
		return Record{}, fmt.Errorf("get record %s: %w", id, err)
	}
	return r.record()
}

// getQuery is Get's query: one row by its unique tracking id, and only the
// client's own.
const getQuery = `SELECT ` + selectColumns + ` FROM stk_pushes WHERE tracking_id = $1 AND client = $2`

// prepared is query prepared and kept in slot, or nil when it cannot be
// prepared now (the caller then sends the query as it is, and the next
// call tries again). Get's query is kept in s.get, Apply's upsert in
// s.upsert.
//
// A query with arguments sent as it is costs lib/pq two round trips, one
// to parse it and one to bind and run it; prepared, database/sql parses it
// once on each connection of the pool and every use after is one round
// trip. Postgres plans it again by itself when the table changes under it
// (a migration, stkgate-admin rebuild-read-model's swap of the table): the
// columns it names are the migrations', which the swap checks.
func (s *Store) prepared(ctx context.Context, slot *atomic.Pointer[sql.Stmt], query string) *sql.Stmt {
	if stmt := slot.Load(); stmt != nil {
		return stmt
	}
	stmt, err := s.db.PrepareContext(ctx, query)
	if err != nil {
		return nil
	}
	if !slot.CompareAndSwap(nil, stmt) {
		_ = stmt.Close() // another call prepared it first
		return slot.Load()
	}
	return stmt
}
