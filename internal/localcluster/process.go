package localcluster

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// Process is a binary run in its own process group with its output in a log file, until Stop.
type Process struct {
	Log string
	cmd *exec.Cmd
	out *os.File
}

// StartProcess runs bin with args, logging to dir/name.log.
func StartProcess(dir, name string, env []string, bin string, args ...string) (*Process, error) {
	p := &Process{Log: filepath.Join(dir, name+".log")}
	// Append, so a process restarted under the same name keeps its earlier log.
	out, err := os.OpenFile(p.Log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		_ = out.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p.cmd, p.out = cmd, out
	return p, nil
}

// Stop ends the process group with SIGTERM, then SIGKILL after 10 s.
func (p *Process) Stop() {
	if p == nil || p.cmd == nil {
		return
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
	_ = p.out.Close()
	p.cmd = nil
}

// Pid is the process's id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Alive reports whether the process is still running.
func (p *Process) Alive() bool {
	if p == nil || p.cmd == nil {
		return false
	}
	var ws syscall.WaitStatus
	pid, err := syscall.Wait4(p.cmd.Process.Pid, &ws, syscall.WNOHANG, nil)
	return err == nil && pid == 0
}
