// Package poll waits for a condition in the test harnesses: a deadline
// bounds a hang, and a timeout error says what was awaited and the last
// state seen. It asserts nothing about speed.
package poll

import (
	"context"
	"fmt"
	"time"
)

// Interval is the pause between two checks.
const Interval = 250 * time.Millisecond

// Until calls cond every Interval until it returns true or an error, or
// timeout passes; the timeout error names what and the last state cond
// reported, and an error of cond ends the wait at once.
func Until(ctx context.Context, timeout time.Duration, what string, cond func(ctx context.Context) (bool, string, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	last := ""
	for {
		ok, state, err := cond(ctx)
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		if ok {
			return nil
		}
		last = state
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: not reached after %s (last: %s)", what, timeout, last)
		case <-time.After(Interval):
		}
	}
}
