// pgx (github.com/jackc/pgx/v5, from the Go module proxy) through the pooler in transaction
// mode, as Go services run it: a pool of connections, pgx's automatic statement cache (every
// query prepared on the server by name), transactions, an error that rolls one back, a batch
// (pipelined), COPY FROM and a result of a megabyte. With sslmode=require in the URL it runs
// over Go's own TLS (crypto/tls), not OpenSSL, and says which version and suite it agreed.
// Exits non-zero at the first wrong answer.
//
// Usage: pgx_clients postgres://user:password@host:port/db[?sslmode=require]
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

const clients = 6

func work(ctx context.Context, pool *pgxpool.Pool, i int) error {
	for k := 0; k < 100; k++ {
		var sum int
		if err := pool.QueryRow(ctx, "SELECT $1::int + $2::int", i, k).Scan(&sum); err != nil {
			return fmt.Errorf("add %d+%d: %w", i, k, err)
		}
		if sum != i+k {
			return fmt.Errorf("add %d+%d: got %d", i, k, sum)
		}
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, "INSERT INTO hits (client, n) VALUES ($1, $2)", fmt.Sprintf("go%d", i), k)
			return err
		})
		if err != nil {
			return fmt.Errorf("transaction %d: %w", k, err)
		}
	}
	// An error inside a transaction rolls it back; the connection serves the next one.
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "INSERT INTO hits (client, n) VALUES ('gorb', $1)", i); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, "SELECT 1/0")
		return err
	})
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "22012" {
		return fmt.Errorf("1/0 in a transaction: got %v, want 22012", err)
	}
	// A batch: 100 queries sent at once, answered in order.
	batch := &pgx.Batch{}
	for k := 0; k < 100; k++ {
		batch.Queue("SELECT $1::int * 3", k)
	}
	results := pool.SendBatch(ctx, batch)
	for k := 0; k < 100; k++ {
		var got int
		if err := results.QueryRow().Scan(&got); err != nil || got != 3*k {
			results.Close()
			return fmt.Errorf("batch query %d: got %d, %v", k, got, err)
		}
	}
	if err := results.Close(); err != nil {
		return fmt.Errorf("batch: %w", err)
	}
	// COPY FROM (many records toward the server) and a megabyte back (many toward the client).
	rows := make([][]any, 5000)
	for k := range rows {
		rows[k] = []any{fmt.Sprintf("go%d", i), k}
	}
	copied, err := pool.CopyFrom(ctx, pgx.Identifier{"copied"}, []string{"client", "n"},
		pgx.CopyFromRows(rows))
	if err != nil || copied != int64(len(rows)) {
		return fmt.Errorf("COPY FROM: %d rows, %v", copied, err)
	}
	var big string
	letter := string(rune('a' + i))
	if err := pool.QueryRow(ctx, "SELECT repeat($1::text, 1000000)", letter).Scan(&big); err != nil {
		return fmt.Errorf("a megabyte: %w", err)
	}
	if len(big) != 1000000 || strings.Trim(big, letter) != "" {
		return fmt.Errorf("a megabyte: got %d bytes", len(big))
	}
	return nil
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: pgx_clients postgres://user:password@host:port/db")
		os.Exit(2)
	}
	ctx := context.Background()
	config, err := pgxpool.ParseConfig(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAILED", err)
		os.Exit(1)
	}
	config.MaxConns = clients
	pool, err := pgxpool.NewWithConfig(ctx, config)
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAILED", err)
		os.Exit(1)
	}
	defer pool.Close()

	var wg sync.WaitGroup
	failures := make([]error, clients)
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func(i int) { defer wg.Done(); failures[i] = work(ctx, pool, i) }(i)
	}
	wg.Wait()
	if err := errors.Join(failures...); err != nil {
		fmt.Fprintln(os.Stderr, "FAILED", err)
		os.Exit(1)
	}

	over := "in the clear"
	conn, err := pool.Acquire(ctx)
	if err == nil {
		if t, ok := conn.Conn().PgConn().Conn().(*tls.Conn); ok {
			state := t.ConnectionState()
			over = "over " + tls.VersionName(state.Version) + ", " + tls.CipherSuiteName(state.CipherSuite)
		}
		conn.Release()
	}
	fmt.Printf("ok pgx: %d clients, 600 prepared queries, 600 transactions, 600 batched queries, "+
		"%d rows copied, %d megabytes read, %s\n", clients, clients*5000, clients, over)
}
