package epsync_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/epsync/epsync/clients/go/epsync"
	"github.com/epsync/epsync/clients/go/epsyncv1"
)

// server is a real epsync server, run as a subprocess of the test.
type server struct {
	t       *testing.T
	dataDir string
	port    string
	cmd     *exec.Cmd
	done    chan struct{}
	mu      sync.Mutex
	log     strings.Builder
}

var servingLine = regexp.MustCompile(`epsync serving on 127\.0\.0\.1:(\d+)`)

// startServer starts `python -m epsync serve` on the embedded SQLite store in a fresh directory,
// on a port of the kernel's choosing. EPSYNC_PYTHON names the python of the project's venv
// (`make test` sets it).
func startServer(t *testing.T, extra ...string) *server {
	t.Helper()
	if os.Getenv("EPSYNC_PYTHON") == "" {
		t.Skip("EPSYNC_PYTHON is not set: it names the venv python that runs the epsync server (make test sets it)")
	}
	s := &server{t: t, dataDir: t.TempDir(), port: "0"}
	s.start(extra...)
	t.Cleanup(s.kill)
	return s
}

func (s *server) addr() string { return "127.0.0.1:" + s.port }

// start runs the server on s.port (0 the first time) and waits until it logs the bound port.
func (s *server) start(extra ...string) {
	s.t.Helper()
	args := append([]string{"-m", "epsync", "serve", "--listen", "127.0.0.1:" + s.port, "--data-dir", s.dataDir, "--log-level", "INFO"}, extra...)
	cmd := exec.Command(os.Getenv("EPSYNC_PYTHON"), args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		s.t.Fatal(err)
	}
	cmd.Stdout = io.Discard
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("starting the epsync server: %v", err)
	}
	s.cmd, s.done = cmd, make(chan struct{})
	bound := make(chan string, 1)
	go func() {
		defer close(s.done)
		scanner := bufio.NewScanner(stderr)
		for scanner.Scan() {
			line := scanner.Text()
			s.mu.Lock()
			s.log.WriteString(line + "\n")
			s.mu.Unlock()
			if m := servingLine.FindStringSubmatch(line); m != nil {
				select {
				case bound <- m[1]:
				default:
				}
			}
		}
		_ = cmd.Wait()
	}()
	select {
	case port := <-bound:
		s.port = port
	case <-s.done:
		s.t.Fatalf("the epsync server exited before serving:\n%s", s.output())
	case <-time.After(20 * time.Second):
		s.kill()
		s.t.Fatalf("the epsync server did not log its port within 20 s:\n%s", s.output())
	}
}

func (s *server) output() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.log.String()
}

// kill sends SIGKILL (no shutdown, no goodbye to clients) and waits for the process to end.
func (s *server) kill() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		s.t.Errorf("the epsync server did not exit after SIGKILL")
	}
	s.cmd = nil
}

func dial(t *testing.T, addrs ...string) *epsync.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := epsync.Dial(ctx, addrs, epsync.WithBackoff(epsync.Backoff{Initial: 20 * time.Millisecond, Max: 500 * time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func testContext(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func endpoint(namespace, node, pod string, labels map[string]string) *epsyncv1.WorkloadEndpoint {
	return &epsyncv1.WorkloadEndpoint{
		Metadata: &epsyncv1.ObjectMeta{Namespace: namespace, Labels: labels},
		Spec: &epsyncv1.WorkloadEndpointSpec{
			Node: node, Orchestrator: "k8s", Pod: pod, Endpoint: "eth0",
			IpNetworks: []string{fmt.Sprintf("10.%d.%d.%d/32", len(node), len(pod)%250, len(namespace))}, InterfaceName: "cali0",
		},
	}
}
