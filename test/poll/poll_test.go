package poll

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestUntil(t *testing.T) {
	calls := 0
	if err := Until(context.Background(), time.Minute, "third call", func(context.Context) (bool, string, error) {
		calls++
		return calls == 3, "", nil
	}); err != nil || calls != 3 {
		t.Errorf("Until = %v after %d calls, want nil after 3", err, calls)
	}
	boom := errors.New("boom")
	if err := Until(context.Background(), time.Minute, "x", func(context.Context) (bool, string, error) {
		return false, "", boom
	}); !errors.Is(err, boom) {
		t.Errorf("an error of cond: Until = %v, want it wrapped", err)
	}
	err := Until(context.Background(), time.Millisecond, "never", func(context.Context) (bool, string, error) {
		return false, "still 42", nil
	})
	if err == nil || !strings.Contains(err.Error(), "never") || !strings.Contains(err.Error(), "still 42") {
		t.Errorf("timeout: Until = %v, want what and the last state", err)
	}
}
