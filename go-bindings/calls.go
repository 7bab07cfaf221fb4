package imv

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/containerd/ttrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// ttrpc calls to the daemon, each on a connection of its own for as long as it runs.
//
// Why not ttrpc's Client: it multiplexes calls over one connection, so every answer is read
// by a receiving goroutine and handed to the caller's. On a 2-core node that hand-off (and
// the thread wake-ups behind it) made a call cost ~110 µs where the same frames, written
// and read by the calling goroutine itself, cost ~45 µs: a fifth of a warm MutateMounts
// inside containerd. Here a call writes its request and reads its answer on a connection
// no other call uses meanwhile; concurrent calls take other connections (at most
// maxConnections), and a few connections are kept for the next calls. The frames and messages are ttrpc's own
// (its Request and Response types); see ttrpc's PROTOCOL.md.

const (
	// maxConnections is how many calls of one Client run at once; more wait for a
	// connection (until their context ends). A quarter of the daemon's default connection
	// limit (64), so that a few busy clients fit; a client refused a connection anyway
	// waits for one of its own (awaitConnection).
	maxConnections = 16
	// keptConnections is how many idle connections a Client keeps for later calls. Each
	// costs the daemon a thread or two while idle.
	keptConnections = 4

	frameHeaderLength = 10
	frameLengthMax    = 4 << 20 // ttrpc's limit on a frame's data
	frameRequest      = 1
	frameResponse     = 2
)

// conn is one connection to the daemon, used by one call at a time.
type conn struct {
	net.Conn
	r        *bufio.Reader
	streamID uint32 // of the last request; client streams are odd: 1, 3, 5, ...
}

// errNotSent is a request that never reached the daemon: the connection was closed
// before it was written (the daemon restarted, or closed an idle connection).
var errNotSent = errors.New("request not sent")

// call runs method of imv.v1.ImageVolumes with req and decodes the answer into resp.
func (c *Client) call(ctx context.Context, method string, req, resp proto.Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	payload, err := proto.Marshal(req)
	if err != nil {
		return newError(codes.InvalidArgument, fmt.Sprintf("imv: encoding the %s request: %v", method, err))
	}
	creq := &ttrpc.Request{Service: "imv.v1.ImageVolumes", Method: method, Payload: payload}
	if dl, ok := ctx.Deadline(); ok {
		creq.TimeoutNano = time.Until(dl).Nanoseconds()
	}
	frame, err := proto.Marshal(creq)
	if err != nil {
		return newError(codes.InvalidArgument, fmt.Sprintf("imv: encoding the %s request: %v", method, err))
	}
	if len(frame) > frameLengthMax {
		return newError(codes.InvalidArgument, fmt.Sprintf("imv: the %s request is %d bytes, over ttrpc's limit of %d", method, len(frame), frameLengthMax))
	}

	if err := c.acquire(ctx); err != nil {
		return err
	}
	defer c.release()
	var cresp *ttrpc.Response
	for attempt := 0; ; attempt++ {
		cn, kept, err := c.connection(ctx)
		if err != nil {
			return err
		}
		cresp, err = c.roundTrip(ctx, cn, frame)
		if err == nil && !kept && cresp.GetStatus().GetCode() == int32(codes.ResourceExhausted) {
			// The daemon serves all the connections it may: this one was refused and the
			// request did not run. It runs on one of this client's own connections once
			// one is free; with none, the refusal stands.
			c.discard(cn)
			if c.awaitConnection(ctx) {
				continue
			}
			break
		}
		if err == nil {
			c.keep(cn)
			break
		}
		c.discard(cn)
		// A kept connection the daemon closed meanwhile (it restarted, or closed it as
		// idle) took nothing: the request goes again once, on a new connection.
		if errors.Is(err, errNotSent) && kept && attempt == 0 {
			continue
		}
		// The connection's deadlines are all the context's (roundTrip): its timer may
		// fire a moment before the context's own, which then follows.
		if errors.Is(err, os.ErrDeadlineExceeded) {
			<-ctx.Done()
		}
		if ctxErr := ctx.Err(); ctxErr != nil {
			return ctxErr
		}
		return newError(codes.Unavailable, fmt.Sprintf("imv daemon at %s: %v", c.socket, err))
	}
	if s := cresp.GetStatus(); s != nil && s.GetCode() != int32(codes.OK) {
		st := status.FromProto(s)
		return newError(st.Code(), st.Message())
	}
	if err := proto.Unmarshal(cresp.GetPayload(), resp); err != nil {
		return newError(codes.Internal, fmt.Sprintf("imv daemon at %s: decoding the %s answer: %v", c.socket, method, err))
	}
	return nil
}

// roundTrip writes one request frame on cn and reads its answer, within ctx.
func (c *Client) roundTrip(ctx context.Context, cn *conn, frame []byte) (*ttrpc.Response, error) {
	// The context's end interrupts the write or read in progress: the connection is then
	// discarded (its answer may still come).
	dl, _ := ctx.Deadline()
	if err := cn.SetDeadline(dl); err != nil {
		return nil, errNotSent
	}
	stop := context.AfterFunc(ctx, func() { _ = cn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	cn.streamID += 2
	msg := make([]byte, frameHeaderLength+len(frame))
	binary.BigEndian.PutUint32(msg[0:], uint32(len(frame)))
	binary.BigEndian.PutUint32(msg[4:], cn.streamID)
	msg[8] = frameRequest
	copy(msg[frameHeaderLength:], frame)
	if n, err := cn.Write(msg); err != nil {
		if n == 0 && (errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET)) {
			return nil, errNotSent
		}
		return nil, err
	}

	var header [frameHeaderLength]byte
	if _, err := io.ReadFull(cn.r, header[:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, errors.New("connection closed before the answer came")
		}
		return nil, err
	}
	length := binary.BigEndian.Uint32(header[0:])
	streamID := binary.BigEndian.Uint32(header[4:])
	if length > frameLengthMax {
		return nil, fmt.Errorf("an answer of %d bytes, over ttrpc's limit of %d", length, frameLengthMax)
	}
	if streamID != cn.streamID || header[8] != frameResponse {
		return nil, fmt.Errorf("a frame of type %d for stream %d where the answer to stream %d was due", header[8], streamID, cn.streamID)
	}
	data := make([]byte, length)
	if _, err := io.ReadFull(cn.r, data); err != nil {
		return nil, fmt.Errorf("reading the answer: %w", err)
	}
	var resp ttrpc.Response
	if err := proto.Unmarshal(data, &resp); err != nil {
		return nil, fmt.Errorf("an answer that does not decode: %w", err)
	}
	return &resp, nil
}

// acquire waits for the right to use a connection (at most maxConnections at once).
func (c *Client) acquire(ctx context.Context) error {
	select {
	case c.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *Client) release() { <-c.slots }

// connection returns a kept connection (kept is then true) or dials a new one.
func (c *Client) connection(ctx context.Context) (cn *conn, kept bool, err error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, false, newError(codes.FailedPrecondition, "imv: the client is closed")
	}
	if n := len(c.idle); n > 0 {
		cn = c.idle[n-1]
		c.idle = c.idle[:n-1]
		c.busy[cn] = struct{}{}
		c.mu.Unlock()
		return cn, true, nil
	}
	c.mu.Unlock()

	nc, err := dialUnix(ctx, c.socket)
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, false, ctxErr
		}
		return nil, false, newError(codes.Unavailable, fmt.Sprintf("imv daemon at %s: %v", c.socket, err))
	}
	cn = &conn{Conn: nc, r: bufio.NewReaderSize(nc, 4096), streamID: ^uint32(0)}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		_ = nc.Close()
		return nil, false, newError(codes.FailedPrecondition, "imv: the client is closed")
	}
	c.busy[cn] = struct{}{}
	return cn, false, nil
}

// keep takes cn back after a call that read its whole answer.
func (c *Client) keep(cn *conn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.busy[cn]; !ok {
		return // Close closed it meanwhile
	}
	delete(c.busy, cn)
	if c.closed || len(c.idle) >= keptConnections {
		_ = cn.Close()
		return
	}
	c.idle = append(c.idle, cn)
	select {
	case c.kept <- struct{}{}:
	default:
	}
}

// awaitConnection waits until a connection of this client is kept for the next call:
// false when it has none to wait for (none in use, none kept), or ctx ended.
func (c *Client) awaitConnection(ctx context.Context) bool {
	c.mu.Lock()
	if len(c.idle) > 0 {
		c.mu.Unlock()
		return true
	}
	if len(c.busy) == 0 {
		c.mu.Unlock()
		return false
	}
	c.mu.Unlock()
	select {
	case <-c.kept:
		return true
	case <-ctx.Done():
		return false
	}
}

// discard closes cn after a call that failed on it: what is left in it is unknown.
func (c *Client) discard(cn *conn) {
	c.mu.Lock()
	delete(c.busy, cn)
	c.mu.Unlock()
	_ = cn.Close()
}

// dialUnix connects to socket. A server whose listen backlog is full refuses a unix
// connect with EAGAIN at once (where TCP would queue the SYN): ttrpc-rust's server, which
// a shim hosting the service runs, keeps a small backlog and accepts on one thread. That
// is "busy, try again", so it is tried again, a little later each time, until ctx ends.
func dialUnix(ctx context.Context, socket string) (net.Conn, error) {
	var d net.Dialer
	wait := time.Millisecond
	for {
		nc, err := d.DialContext(ctx, "unix", socket)
		if err == nil || !errors.Is(err, syscall.EAGAIN) {
			return nc, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(wait):
		}
		wait = min(2*wait, 50*time.Millisecond)
	}
}
