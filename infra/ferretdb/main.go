// Command switchboard-ferretdb runs FerretDB v1 (MongoDB wire protocol over SQLite)
// on a local address. It exists because FerretDB's own command panics when built with
// `go install` (its version file is generated at release time), while the embeddable
// package works. Used by the project's local provisioning for tests and `make run`.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/FerretDB/FerretDB/ferretdb"
)

func main() {
	listen := flag.String("listen-addr", "127.0.0.1:27017", "TCP address to listen on")
	dir := flag.String("sqlite-dir", "", "existing directory holding the SQLite databases")
	debug := flag.Bool("debug", false, "log at debug level")
	flag.Parse()

	if *dir == "" {
		fmt.Fprintln(os.Stderr, "switchboard-ferretdb: -sqlite-dir is required")
		os.Exit(2)
	}
	abs, err := filepath.Abs(*dir)
	if err != nil {
		fmt.Fprintf(os.Stderr, "switchboard-ferretdb: %v\n", err)
		os.Exit(2)
	}
	if st, err := os.Stat(abs); err != nil || !st.IsDir() {
		fmt.Fprintf(os.Stderr, "switchboard-ferretdb: %s is not an existing directory\n", abs)
		os.Exit(2)
	}

	// FerretDB logs every unsupported command (PyMongo's endSessions on each close) at
	// warning level with a full message dump; errors are what an operator needs here.
	level := slog.LevelError
	if *debug {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: *listen},
		Logger:    logger,
		Handler:   "sqlite",
		SQLiteURL: "file:" + abs + "/", // FerretDB requires the trailing slash
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "switchboard-ferretdb: %v\n", err)
		os.Exit(1)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	fmt.Fprintf(os.Stderr, "switchboard-ferretdb: listening on %s\n", f.MongoDBURI())
	if err := f.Run(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "switchboard-ferretdb: %v\n", err)
		os.Exit(1)
	}
}
