package devstack

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/lib/pq"
)

// localDatabase returns the URL of database name on the local Postgres,
// creating it if needed, or an error if that Postgres does not answer or
// will not let us in.
func localDatabase(ctx context.Context, name string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	base := "postgres://postgres@" + localPostgresAddr + "/"
	opts := "?sslmode=disable&connect_timeout=2"
	db, err := sql.Open("postgres", base+"postgres"+opts)
	if err != nil {
		return "", err
	}
	defer db.Close()
	if err := db.PingContext(ctx); err != nil {
		return "", fmt.Errorf("local Postgres: %w", err)
	}
	_, err = db.ExecContext(ctx, "CREATE DATABASE "+pq.QuoteIdentifier(name))
	var pqErr *pq.Error
	if err != nil && !(errors.As(err, &pqErr) && pqErr.Code == "42P04") { // duplicate_database
		return "", fmt.Errorf("create database %s: %w", name, err)
	}
	return base + name + opts, nil
}
