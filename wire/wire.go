package wire

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
)

// Subprotocol names offered by clients in Sec-WebSocket-Protocol.
const (
	// SubprotocolProto selects binary frames carrying protobuf.
	SubprotocolProto = "hubbub.v1.proto"
	// SubprotocolJSON selects text frames carrying canonical protobuf JSON.
	SubprotocolJSON = "hubbub.v1.json"
)

// Subprotocols lists the subprotocols in the server's order of preference.
var Subprotocols = []string{SubprotocolProto, SubprotocolJSON}

// Encoding is the frame encoding of one connection.
type Encoding uint8

const (
	// Proto is the binary protobuf encoding (WebSocket binary frames).
	Proto Encoding = iota + 1
	// JSON is the canonical protobuf JSON encoding (WebSocket text frames).
	JSON
)

// String names the encoding by its subprotocol.
func (e Encoding) String() string {
	switch e {
	case Proto:
		return SubprotocolProto
	case JSON:
		return SubprotocolJSON
	}
	return fmt.Sprintf("Encoding(%d)", uint8(e))
}

// EncodingFor returns the encoding a subprotocol selects.
func EncodingFor(subprotocol string) (Encoding, bool) {
	switch subprotocol {
	case SubprotocolProto:
		return Proto, true
	case SubprotocolJSON:
		return JSON, true
	}
	return 0, false
}

// ErrMalformed wraps every decoding failure.
var ErrMalformed = errors.New("wire: malformed frame")

var (
	jsonMarshal   = protojson.MarshalOptions{}
	jsonUnmarshal = protojson.UnmarshalOptions{DiscardUnknown: true}
	protoMarshal  = proto.MarshalOptions{}
)

// Marshal encodes any frame message in the encoding.
func Marshal(m proto.Message, enc Encoding) ([]byte, error) {
	if enc == JSON {
		return jsonMarshal.Marshal(m)
	}
	return protoMarshal.Marshal(m)
}

// AppendMarshal appends the encoding of m to b.
func AppendMarshal(b []byte, m proto.Message, enc Encoding) ([]byte, error) {
	if enc == JSON {
		out, err := jsonMarshal.MarshalAppend(b, m)
		return out, err
	}
	return protoMarshal.MarshalAppend(b, m)
}

func unmarshal(data []byte, m proto.Message, enc Encoding) error {
	var err error
	if enc == JSON {
		err = jsonUnmarshal.Unmarshal(data, m)
	} else {
		err = proto.Unmarshal(data, m)
	}
	if err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return nil
}

// DecodeClientFrame decodes one client frame. Unknown fields are ignored, so a
// frame carrying a command newer than this server decodes with no command set.
func DecodeClientFrame(data []byte, enc Encoding) (*hubbubv1.ClientFrame, error) {
	f := &hubbubv1.ClientFrame{}
	if err := unmarshal(data, f, enc); err != nil {
		return nil, err
	}
	return f, nil
}

// DecodeServerFrame decodes one server frame.
func DecodeServerFrame(data []byte, enc Encoding) (*hubbubv1.ServerFrame, error) {
	f := &hubbubv1.ServerFrame{}
	if err := unmarshal(data, f, enc); err != nil {
		return nil, err
	}
	return f, nil
}
