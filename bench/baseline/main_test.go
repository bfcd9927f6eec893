package main

import (
	"encoding/json"
	"testing"
)

func TestBodyHasTheSizeAskedAndIsJSON(t *testing.T) {
	for _, size := range []int{87, 126, 131, 400} {
		b, err := body(size)
		if err != nil {
			t.Fatalf("body(%d): %v", size, err)
		}
		var doc map[string]any
		if len(b) != size || json.Unmarshal(b, &doc) != nil || doc["app"] != "crm" {
			t.Fatalf("body(%d) = %q (%d bytes)", size, b, len(b))
		}
	}
	if _, err := body(10); err == nil {
		t.Fatal("a size below the fixed members was accepted")
	}
}
