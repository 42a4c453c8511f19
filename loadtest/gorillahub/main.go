// Command gorillahub is a benchmark fixture: the classic gorilla/websocket
// "hub" chat server (one hub goroutine, a read and a write goroutine per
// client, a buffered channel per client that drops the client when full),
// speaking just enough of Hubbub's protobuf protocol (connect, join, publish)
// for `hubbub bench` to drive it. It is what Hubbub's figures are compared with
// in docs/performance.md; it is not part of Hubbub.
//
//	go run ./loadtest/gorillahub --listen 127.0.0.1:8090
package main

import (
	"flag"
	"log"
	"net/http"
	"time"

	"github.com/gorilla/websocket"
	"google.golang.org/protobuf/proto"

	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
	"github.com/hubbub-chat/hubbub/wire"
)

type client struct {
	ws   *websocket.Conn
	send chan []byte
	user string
}

type publish struct {
	from *client
	id   uint64
	req  *hubbubv1.PublishRequest
}

type hub struct {
	clients    map[*client]bool
	register   chan *client
	unregister chan *client
	publish    chan publish
	offset     uint64
}

func (h *hub) run() {
	for {
		select {
		case c := <-h.register:
			h.clients[c] = true
		case c := <-h.unregister:
			if h.clients[c] {
				delete(h.clients, c)
				close(c.send)
			}
		case p := <-h.publish:
			h.offset++
			msg, _ := proto.Marshal(&hubbubv1.ServerFrame{Body: &hubbubv1.ServerFrame_Message{Message: &hubbubv1.Message{
				Room: p.req.GetRoom(), Offset: h.offset, Sender: &hubbubv1.ClientInfo{User: p.from.user}, Body: p.req.GetBody()}}})
			for c := range h.clients {
				select {
				case c.send <- msg:
				default: // slow: drop the client, as the classic hub does
					delete(h.clients, c)
					close(c.send)
				}
			}
			ack, _ := proto.Marshal(&hubbubv1.ServerFrame{Id: p.id, Body: &hubbubv1.ServerFrame_Publish{Publish: &hubbubv1.PublishReply{Room: p.req.GetRoom(), Offset: h.offset}}})
			if h.clients[p.from] {
				select {
				case p.from.send <- ack:
				default:
				}
			}
		}
	}
}

func (c *client) reply(f *hubbubv1.ServerFrame) {
	b, _ := proto.Marshal(f)
	defer func() { _ = recover() }() // the hub may have closed send
	c.send <- b
}

func (c *client) readPump(h *hub) {
	defer func() {
		h.unregister <- c
		c.ws.Close()
	}()
	joined := false
	for {
		_, data, err := c.ws.ReadMessage()
		if err != nil {
			return
		}
		f := &hubbubv1.ClientFrame{}
		if proto.Unmarshal(data, f) != nil {
			return
		}
		switch cmd := f.GetCommand().(type) {
		case *hubbubv1.ClientFrame_Connect:
			c.user = cmd.Connect.GetName()
			c.reply(&hubbubv1.ServerFrame{Id: f.GetId(), Body: &hubbubv1.ServerFrame_Connect{Connect: &hubbubv1.ConnectReply{Client: &hubbubv1.ClientInfo{User: c.user}}}})
		case *hubbubv1.ClientFrame_Join:
			if !joined {
				joined = true
				h.register <- c
			}
			c.reply(&hubbubv1.ServerFrame{Id: f.GetId(), Body: &hubbubv1.ServerFrame_Join{Join: &hubbubv1.JoinReply{Room: cmd.Join.GetRoom(), Position: &hubbubv1.StreamPosition{}}}})
		case *hubbubv1.ClientFrame_Publish:
			h.publish <- publish{from: c, id: f.GetId(), req: cmd.Publish}
		}
	}
}

func (c *client) writePump() {
	ping := time.NewTicker(25 * time.Second)
	defer func() {
		ping.Stop()
		c.ws.Close()
	}()
	for {
		select {
		case msg, ok := <-c.send:
			_ = c.ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if !ok {
				_ = c.ws.WriteMessage(websocket.CloseMessage, []byte{})
				return
			}
			if c.ws.WriteMessage(websocket.BinaryMessage, msg) != nil {
				return
			}
		case <-ping.C:
			_ = c.ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if c.ws.WriteMessage(websocket.PingMessage, nil) != nil {
				return
			}
		}
	}
}

func main() {
	listen := flag.String("listen", "127.0.0.1:8090", "address to listen on")
	flag.Parse()
	h := &hub{clients: map[*client]bool{}, register: make(chan *client), unregister: make(chan *client), publish: make(chan publish, 256)}
	go h.run()
	up := websocket.Upgrader{ReadBufferSize: 1024, WriteBufferSize: 1024, Subprotocols: []string{wire.SubprotocolProto}}
	http.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		c := &client{ws: ws, send: make(chan []byte, 256)}
		go c.writePump()
		go c.readPump(h)
	})
	log.Printf("gorillahub listening on %s", *listen)
	log.Fatal(http.ListenAndServe(*listen, nil))
}
