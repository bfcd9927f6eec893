package deploy

import (
	"path"
	"slices"
	"strings"
	"testing"
)

// ---- Dockerfile ----

type dockerInstr struct {
	cmd  string // upper case
	args string
}

// dockerStages splits a Dockerfile into stages of instructions, joining continuation lines.
func dockerStages(t *testing.T) [][]dockerInstr {
	t.Helper()
	var stages [][]dockerInstr
	var logical strings.Builder
	flush := func() {
		line := strings.TrimSpace(logical.String())
		logical.Reset()
		if line == "" {
			return
		}
		cmd, args, _ := strings.Cut(line, " ")
		in := dockerInstr{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)}
		if in.cmd == "FROM" {
			stages = append(stages, nil)
		}
		if len(stages) > 0 {
			stages[len(stages)-1] = append(stages[len(stages)-1], in)
		}
	}
	for _, line := range strings.Split(string(readFile(t, "Dockerfile")), "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") {
			continue
		}
		if body, cont := strings.CutSuffix(trimmed, "\\"); cont {
			logical.WriteString(body + " ")
			continue
		}
		logical.WriteString(trimmed)
		flush()
	}
	flush()
	return stages
}

func TestDockerfile(t *testing.T) {
	stages := dockerStages(t)
	if len(stages) < 2 {
		t.Fatalf("want a multi-stage build, got %d stages", len(stages))
	}
	find := func(stage []dockerInstr, cmd string) []string {
		var out []string
		for _, in := range stage {
			if in.cmd == cmd {
				out = append(out, in.args)
			}
		}
		return out
	}
	var builds []string
	for _, st := range stages[:len(stages)-1] {
		builds = append(builds, find(st, "RUN")...)
	}
	buildRuns := strings.Join(builds, "\n")
	final := stages[len(stages)-1]

	users := find(final, "USER")
	user := ""
	if len(users) > 0 {
		user, _, _ = strings.Cut(users[len(users)-1], ":")
	}
	for _, check := range []struct {
		name string
		ok   bool
	}{
		{"build with CGO_ENABLED=0", strings.Contains(buildRuns, "CGO_ENABLED=0")},
		{"build with -trimpath", strings.Contains(buildRuns, "-trimpath")},
		{"version stamped with -X main.version=", strings.Contains(buildRuns, "-X main.version=")},
		{"builds ./cmd/tokend", strings.Contains(buildRuns, "./cmd/tokend")},
		{"builds ./cmd/fakedingtalk", strings.Contains(buildRuns, "./cmd/fakedingtalk")},
		{"final stage on distroless static nonroot", strings.Contains(final[0].args, "gcr.io/distroless/static") && strings.Contains(final[0].args, "nonroot")},
		{"final stage USER is non-root", user != "" && user != "0" && user != "root"},
		{"EXPOSE 8080 9090", strings.Join(find(final, "EXPOSE"), " ") == "8080 9090"},
		{"HEALTHCHECK runs tokend healthcheck", strings.Contains(strings.Join(find(final, "HEALTHCHECK"), ""), `CMD ["/tokend", "healthcheck"]`)},
		{`ENTRYPOINT ["/tokend"]`, slices.Equal(find(final, "ENTRYPOINT"), []string{`["/tokend"]`})},
		{"CMD -config /etc/tokend/config.yaml", slices.Equal(find(final, "CMD"), []string{`["-config", "/etc/tokend/config.yaml"]`})},
	} {
		t.Run(check.name, func(t *testing.T) {
			if !check.ok {
				t.Errorf("Dockerfile: want %s", check.name)
			}
		})
	}
}

// dockerignored reports whether .dockerignore keeps p out of the build context (last matching pattern
// wins; a pattern matching a parent directory matches its contents). Enough for the patterns used here.
func dockerignored(patterns []string, p string) bool {
	ignored := false
	for _, pat := range patterns {
		neg := strings.HasPrefix(pat, "!")
		pat = strings.TrimSuffix(strings.TrimPrefix(pat, "!"), "/")
		for prefix := p; prefix != "." && prefix != "/"; prefix = path.Dir(prefix) {
			if ok, _ := path.Match(pat, prefix); ok {
				ignored = !neg
				break
			}
		}
	}
	return ignored
}

func TestDockerignore(t *testing.T) {
	var patterns []string
	for _, line := range strings.Split(string(readFile(t, ".dockerignore")), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			patterns = append(patterns, line)
		}
	}
	for _, tc := range []struct {
		path    string
		ignored bool
	}{
		{".git/config", true},
		{".env", true},
		{"deploy/compose/secrets/DEMO-ONLY_redis_password", true},
		{"docker-compose.yml", true},
		{"go.mod", false},
		{"go.sum", false},
		{"cmd/tokend/main.go", false},
		{"internal/token/token.go", false},
	} {
		t.Run(tc.path, func(t *testing.T) {
			if got := dockerignored(patterns, tc.path); got != tc.ignored {
				t.Errorf("ignored = %v, want %v", got, tc.ignored)
			}
		})
	}
}
