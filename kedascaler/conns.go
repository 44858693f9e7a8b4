package kedascaler

import (
	"net"
	"sync"

	"k8s.io/klog/v2"
)

// perClient caps the connections one client address holds: a connection takes its slot of the global
// cap (--max-connections) at accept, before its handshake, so one client re-opening silent connections
// could hold every slot and keep KEDA, from another address, waiting. One past the cap is closed at once.
type perClient struct {
	net.Listener
	max    int
	mu     sync.Mutex
	open   map[string]int
	logged map[string]bool // addresses whose refusals were logged, until they drop under the cap
}

func limitPerClient(l net.Listener, max int) net.Listener {
	return &perClient{Listener: l, max: max, open: map[string]int{}, logged: map[string]bool{}}
}

func (p *perClient) Accept() (net.Conn, error) {
	for {
		c, err := p.Listener.Accept()
		if err != nil {
			return nil, err
		}
		host := c.RemoteAddr().String()
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		p.mu.Lock()
		if p.open[host] >= p.max {
			first := !p.logged[host]
			p.logged[host] = true
			p.mu.Unlock()
			_ = c.Close()
			if first {
				klog.InfoS("Refusing connections past the per-client cap (--max-connections-per-client)", "client", host, "max", p.max)
			}
			continue
		}
		p.open[host]++
		p.mu.Unlock()
		return &clientConn{Conn: c, release: func() { p.release(host) }}, nil
	}
}

func (p *perClient) release(host string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.open[host]--; p.open[host] <= 0 {
		delete(p.open, host)
		delete(p.logged, host)
	}
}

// clientConn gives its client's slot back once, however often it is closed.
type clientConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *clientConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
