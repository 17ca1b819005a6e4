package membudget

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

func TestNeedWaitsThenBusy(t *testing.T) {
	b := New(100, 50*time.Millisecond)
	r1, r2 := b.Reserve(), b.Reserve()
	if err := r1.Need(t.Context(), 60); err != nil {
		t.Fatal(err)
	}
	if err := r1.Need(t.Context(), 40); err != nil || b.Reserved() != 60 {
		t.Fatalf("a smaller need: %v, reserved %d; want nil, 60", err, b.Reserved())
	}
	start := time.Now()
	err := r2.Need(t.Context(), 60)
	var busy *BusyError
	if !errors.As(err, &busy) || !IsBusy(fmt.Errorf("wrapped: %w", err)) || busy.Need != 60 || busy.Size != 100 {
		t.Fatalf("a need past what is left: %v, want a *BusyError for 60 of 100", err)
	}
	if waited := time.Since(start); waited < 50*time.Millisecond {
		t.Errorf("gave up after %s, before the wait", waited)
	}
	r1.Release()
	r1.Release() // twice is harmless
	if err := r2.Need(t.Context(), 60); err != nil {
		t.Fatalf("after the release: %v", err)
	}
	if err := r2.Need(t.Context(), 100); err != nil || b.Reserved() != 100 {
		t.Fatalf("growing to the whole budget: %v, reserved %d", err, b.Reserved())
	}
	r2.Release()
	if b.Reserved() != 0 {
		t.Errorf("reserved %d after every release", b.Reserved())
	}
}

func TestNeedGetsRoomWhileWaiting(t *testing.T) {
	b := New(100, 10*time.Second)
	r1, r2 := b.Reserve(), b.Reserve()
	r1.Need(t.Context(), 90)
	go func() { time.Sleep(20 * time.Millisecond); r1.Release() }()
	if err := r2.Need(t.Context(), 50); err != nil {
		t.Fatal(err)
	}
}

func TestNeverFits(t *testing.T) {
	b := New(100, 10*time.Second)
	start := time.Now()
	err := b.Reserve().Need(t.Context(), 101)
	var tl *TooLargeError
	if !errors.As(err, &tl) || tl.Need != 101 || tl.Size != 100 {
		t.Fatalf("need 101 of 100: %v, want a *TooLargeError", err)
	}
	if time.Since(start) > time.Second {
		t.Error("waited for what can never fit")
	}
}

func TestCancelledWhileWaiting(t *testing.T) {
	b := New(100, 10*time.Second)
	b.Reserve().Need(t.Context(), 100)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if err := b.Reserve().Need(ctx, 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("cancelled: %v, want the context's error", err)
	}
}

func TestNilBudgetGrantsAll(t *testing.T) {
	var b *Budget
	r := b.Reserve()
	if err := r.Need(t.Context(), 1<<50); err != nil {
		t.Fatal(err)
	}
	r.Release()
	var nr *Reservation
	if err := nr.Need(t.Context(), 1); err != nil {
		t.Fatal(err)
	}
	nr.Release()
}

func TestDefaultSize(t *testing.T) {
	if got := memTotal("MemFree: 1 kB\nMemTotal:       24684096 kB\n"); got != 24684096<<10 {
		t.Errorf("memTotal = %d", got)
	}
	if got := memTotal("nothing"); got != 0 {
		t.Errorf("memTotal of nothing = %d", got)
	}
	limits := map[string]string{"/": "max\n", "/system.slice": "4294967296\n", "/system.slice/cached.service": "max\n"}
	read := func(p string) (string, error) {
		if v, ok := limits[p]; ok {
			return v, nil
		}
		return "", errors.New("no such file")
	}
	if got := cgroupLimit("0::/system.slice/cached.service\n", read); got != 4<<30 {
		t.Errorf("cgroupLimit = %d, want the parent's 4 GiB", got)
	}
	if got := cgroupLimit("12:memory:/x\n", read); got != 0 {
		t.Errorf("cgroup v1 only: %d, want 0", got)
	}
	if got := cgroupLimit("0::/\n", read); got != 0 {
		t.Errorf("root without a limit: %d", got)
	}
	if d := DefaultSize(); d < MinDefault {
		t.Errorf("DefaultSize = %d, below %d", d, MinDefault)
	}
}
