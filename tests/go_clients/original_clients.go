// The original MaChat's example clients, rebuilt from their description in
// PROTOCOL.md §8 with the same library calls (Go's net and
// golang.org/x/net/websocket), to check that clients written that way still
// chat with machat unchanged: the TCP client writes the handshake JSON with
// no newline, then each typed line as "text\n", and prints every line it
// reads; the WebSocket client dials with origin http://localhost:8099/,
// sends the handshake as one text message, then each line as "text\n", and
// reads the messages as one byte stream split at "\n". x/net/websocket
// answers pings as it reads, as the original did.
//
//	go run original_clients.go -proto ws -client Mina -room dev -address localhost:8099
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"os"

	"golang.org/x/net/websocket"
)

func main() {
	proto := flag.String("proto", "tcp", "tcp or ws")
	client := flag.String("client", "Mina", "name")
	room := flag.String("room", "dev", "room")
	address := flag.String("address", "localhost:8989", "server address")
	origin := flag.String("origin", "http://localhost:8099/", "WebSocket origin")
	flag.Parse()

	handshake, _ := json.Marshal(map[string]string{"name": *client, "room": *room})
	var conn io.ReadWriteCloser
	var err error
	if *proto == "ws" {
		conn, err = websocket.Dial("ws://"+*address+"/mychat", "", *origin)
		if err == nil {
			err = websocket.Message.Send(conn.(*websocket.Conn), string(handshake))
		}
	} else {
		conn, err = net.Dial("tcp", *address)
		if err == nil {
			_, err = conn.Write(handshake)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "connect:", err)
		os.Exit(1)
	}
	defer conn.Close()

	go func() {
		input := bufio.NewScanner(os.Stdin)
		for input.Scan() {
			line := input.Text() + "\n"
			if ws, ok := conn.(*websocket.Conn); ok {
				err = websocket.Message.Send(ws, line)
			} else {
				_, err = conn.Write([]byte(line))
			}
			if err != nil {
				fmt.Fprintln(os.Stderr, "send:", err)
				os.Exit(1)
			}
		}
	}()

	// Both read the server's bytes as one stream, split at "\n".
	lines := bufio.NewScanner(conn)
	for lines.Scan() {
		fmt.Println(lines.Text())
	}
	fmt.Fprintln(os.Stderr, "connection closed")
}
