package spool_test

import (
	"fmt"
	"log"
	"os"

	"github.com/millwright/millwright/agent/spool"
)

func Example() {
	dir, err := os.MkdirTemp("", "spool-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	s, err := spool.Open(dir, spool.DefaultOptions())
	if err != nil {
		log.Fatal(err)
	}
	// Sources append from any goroutine.
	for _, p := range []string{`{"temp":21.5}`, `{"temp":21.6}`} {
		if _, err := s.Append(spool.ClassRaw, []byte(p)); err != nil {
			log.Fatal(err)
		}
	}
	if _, err := s.Append(spool.ClassEvent, []byte(`{"alarm":"door open"}`)); err != nil {
		log.Fatal(err)
	}
	// Under SyncBatch records become readable after the group commit; Sync
	// forces it instead of waiting up to SyncInterval.
	if err := s.Sync(); err != nil {
		log.Fatal(err)
	}

	// The sender takes the oldest records, sends them, and acknowledges
	// them once the server has stored them durably.
	batch, err := s.Peek(100, 64<<10)
	if err != nil {
		log.Fatal(err)
	}
	for _, r := range batch {
		fmt.Println(r.ID, r.Class, string(r.Payload))
	}
	if err := s.Ack(batch[len(batch)-1].ID); err != nil {
		log.Fatal(err)
	}
	fmt.Println("unacknowledged:", s.Stats().Records)
	if err := s.Close(); err != nil {
		log.Fatal(err)
	}
	// Output:
	// 1 raw {"temp":21.5}
	// 2 raw {"temp":21.6}
	// 3 event {"alarm":"door open"}
	// unacknowledged: 0
}
