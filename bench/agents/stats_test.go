package main

import "testing"

// The buckets are histogram.py's: exact below 128, then 64 per power of two.
func TestBucketOf(t *testing.T) {
	for _, c := range []struct {
		v    int64
		want int
	}{{0, 0}, {127, 127}, {128, 128}, {129, 128}, {130, 129}, {255, 191}, {256, 192}, {1000, 317}, {1 << 40, 64*34 + 64}} {
		if got := bucketOf(c.v); got != c.want {
			t.Errorf("bucketOf(%d) = %d, want %d", c.v, got, c.want)
		}
	}
}
