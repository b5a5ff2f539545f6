// twinstage bridge protocol for Unity (and any .NET): message classes JsonUtility can parse and
// write, the binary state frame decoder, the client-side state copy, and a ClientWebSocket
// connection that queues incoming messages for the main thread.
//
// This file has no UnityEngine dependency: TwinBridgeClient.cs (the MonoBehaviour) sets
// TwinJson.FromJson/ToJson to UnityEngine.JsonUtility; the Mono test sets a stand-in.
// Protocol: docs/protocol.md (field names here are the wire names, hence camelCase).
using System;
using System.Collections.Concurrent;
using System.Collections.Generic;
using System.IO;
using System.Net.WebSockets;
using System.Text;
using System.Threading;
using System.Threading.Tasks;

namespace TwinStage.Bridge
{
    public static class TwinJson
    {
        public static Func<string, Type, object> FromJson;
        public static Func<object, string> ToJson;
        public static T Parse<T>(string json) { return (T)FromJson(json, typeof(T)); }
    }

    // ---- server -> client -------------------------------------------------------------
    [Serializable] public class Envelope { public string type; public string id; }

    [Serializable] public class AttributeInfo
    {
        public int index; public string prim; public string attribute; public string type; public string unit;
        public double min; public double max; public string role; public string drives; public string description;
    }

    [Serializable] public class PrimInfo
    {
        public string path; public string kind; public string assetId; public string model;
        public double[] position; public double[] origin; public double[] center; public double[] size;
        public int colorBy; public int[] attributes;
    }

    [Serializable] public class Limits
    {
        public int maxMessageBytes; public double commandsPerSecond; public int commandBurst;
        public double commandTimeout; public double sendDeadline; public double maxRate; public int ringFrames;
    }

    [Serializable] public class Hello
    {
        public string type; public string protocol; public int version; public string session; public string server; public string scene;
        public string role; public string user; public double tickRate; public long tick; public double simTime; public long seq; public bool paused;
        public string upAxis; public double metersPerUnit; public string[] encodings; public Limits limits;
        public AttributeInfo[] attributes; public PrimInfo[] prims; public PrimInfo[] added; public string[] removed;
        public SceneModel glb;  // the scene's GLB on the bridge's port (null/empty url: none); see TwinGlb.cs
    }

    // hello.glb: where the scene's GLB is served (same auth as the websocket) and what it is.
    [Serializable] public class SceneModel
    {
        public string url; public string mediaType; public long bytes; public string sha256; public string upAxis; public double metersPerUnit;
        public string status; public string reason;  // "ready", "building" (url set, bytes 0: GET answers 503 + Retry-After until done) or "none"
    }

    [Serializable] public class StateMessage  // "snapshot" and "delta" (JSON encoding); a big one comes in parts (part 0 .. parts-1)
    {
        public string type; public long seq; public long tick; public double simTime; public double wallTime;
        public int merged; public string reason; public int part; public int parts;
        public int[] indices; public double[] values; public int[] quality;
        public int[] vec3Indices; public double[] vec3Values; public int[] vec3Quality;
    }

    [Serializable] public class ValuesMessage  // "values" (encoding "compact"): no quality column; all values in snapshot order when indices is empty
    {
        public string type; public long seq; public long tick; public double simTime; public double wallTime; public int merged;
        public int part; public int parts;
        public int[] indices; public double[] values; public int[] vec3Indices; public double[] vec3Values;
        public int[] flagged; public int[] flaggedQuality;
    }

    [Serializable] public class Ack { public string type; public string id; public string of; public long tick; public long seq; public int count; public bool paused; public string detail; }
    [Serializable] public class ErrorMessage { public string type; public string id; public string of; public string code; public string message; }
    [Serializable] public class Alarm
    {
        public string type; public long seq; public long tick; public double simTime; public int index; public string prim; public string attribute;
        public string severity; public bool active; public double value; public string message;
    }
    [Serializable] public class EventMessage { public string type; public long tick; public double simTime; public string kind; public string message; public string user; }
    [Serializable] public class Structure { public string type; public long seq; public long tick; public PrimInfo[] added; public string[] removed; }

    // ---- client -> server -------------------------------------------------------------
    [Serializable] public class AuthMessage { public string type = "auth"; public string token; }
    [Serializable] public class SubscribeMessage
    {
        public string type = "subscribe"; public string id = ""; public string[] prefixes = new string[0]; public string[] attributes = new string[0];
        public string encoding = "binary"; public double maxRate = 0;
    }
    [Serializable] public class ResumeMessage
    {
        public string type = "resume"; public string id = ""; public string[] prefixes = new string[0]; public string[] attributes = new string[0];
        public string encoding = "binary"; public double maxRate = 0; public string session = ""; public long lastSeq;
    }
    // JsonUtility cannot write a field of varying type: one class per value type.
    [Serializable] public class SetNumberMessage { public string type = "set"; public string id; public string prim; public string attribute; public double value; public string unit = ""; }
    [Serializable] public class SetBoolMessage { public string type = "set"; public string id; public string prim; public string attribute; public bool value; public string unit = ""; }
    [Serializable] public class SetVectorMessage { public string type = "set"; public string id; public string prim; public string attribute; public double[] value; public string unit = ""; }
    [Serializable] public class CommandMessage { public string type = "command"; public string id; public string command; public int steps; public string scenario = ""; }

    // ---- binary state frame -----------------------------------------------------------
    public class BinaryFrame
    {
        public const int HeaderSize = 48;
        public bool IsSnapshot; public int Reason; public int Merged; public long Seq; public long Tick; public double SimTime; public double WallTime;
        public bool First = true, Last = true;  // which part of its message (kind-byte flags 0x40: a later part, 0x80: more follow)
        public int[] Indices; public double[] Values; public byte[] Quality;
        public int[] Vec3Indices; public double[] Vec3Values; public byte[] Vec3Quality;

        public static BinaryFrame Decode(byte[] data, int length)
        {
            if (length < HeaderSize || data[0] != 'T' || data[1] != 'W' || data[2] != 'B' || data[3] != '1')
                throw new InvalidDataException("not a twinstage binary frame");
            if (!BitConverter.IsLittleEndian) throw new NotSupportedException("big-endian hosts: swap bytes");
            var f = new BinaryFrame();
            int kind = data[4] & 0x3F;
            f.First = (data[4] & 0x40) == 0; f.Last = (data[4] & 0x80) == 0;
            f.IsSnapshot = kind == 2; f.Reason = data[5]; f.Merged = BitConverter.ToUInt16(data, 6);
            int n = (int)BitConverter.ToUInt32(data, 8), m = (int)BitConverter.ToUInt32(data, 12);
            if (length != HeaderSize + 13 * n + 29 * m) throw new InvalidDataException("binary frame length does not match its header");
            f.Seq = (long)BitConverter.ToUInt64(data, 16); f.Tick = (long)BitConverter.ToUInt64(data, 24);
            f.SimTime = BitConverter.ToDouble(data, 32); f.WallTime = BitConverter.ToDouble(data, 40);
            int o = HeaderSize;
            f.Values = new double[n]; Buffer.BlockCopy(data, o, f.Values, 0, 8 * n); o += 8 * n;
            f.Vec3Values = new double[3 * m]; Buffer.BlockCopy(data, o, f.Vec3Values, 0, 24 * m); o += 24 * m;
            f.Indices = new int[n]; Buffer.BlockCopy(data, o, f.Indices, 0, 4 * n); o += 4 * n;
            f.Vec3Indices = new int[m]; Buffer.BlockCopy(data, o, f.Vec3Indices, 0, 4 * m); o += 4 * m;
            f.Quality = new byte[n]; Buffer.BlockCopy(data, o, f.Quality, 0, n); o += n;
            f.Vec3Quality = new byte[m]; Buffer.BlockCopy(data, o, f.Vec3Quality, 0, m);
            return f;
        }
    }

    // ---- the client's copy of the state -----------------------------------------------
    public class TwinState
    {
        public Hello Hello;
        public double[] Values = new double[0];
        public double[] Vec3 = new double[0];
        public byte[] Quality = new byte[0];
        public bool[] Known = new bool[0];
        public long Seq, Tick; public double SimTime;
        public int Snapshots, Deltas, Gaps;
        readonly Dictionary<string, int> index = new Dictionary<string, int>();

        public void OnHello(Hello h)
        {
            bool same = Hello != null && Hello.session == h.session;
            Hello = h;
            index.Clear();
            foreach (var a in h.attributes) index[a.prim + "." + a.attribute] = a.index;
            if (same) return;
            int n = h.attributes.Length;
            Values = new double[n]; Vec3 = new double[3 * n]; Quality = new byte[n]; Known = new bool[n]; Seq = 0;
        }

        public int IndexOf(string prim, string attribute) { int i; return index.TryGetValue(prim + "." + attribute, out i) ? i : -1; }

        // A big message comes in parts: entries are applied as each arrives, a snapshot's first part clears
        // what was known, and the message counts (its seq becomes ours) only once its last part is in.
        void Begin(bool snapshot, long seq, bool first, bool last)
        {
            if (snapshot) { if (first) Array.Clear(Known, 0, Known.Length); if (last) Snapshots++; }
            else { if (last) Deltas++; if (first && Seq != 0 && seq != Seq + 1) Gaps++; }
        }

        static int[] Concat(int[] a, int[] b) { var r = new int[a.Length + b.Length]; a.CopyTo(r, 0); b.CopyTo(r, a.Length); return r; }

        int[] order = new int[0], vec3Order = new int[0];  // the last snapshot's indices: the order of compact "values"

        public void Apply(ValuesMessage v)
        {
            bool last = v.part >= v.parts - 1;
            Begin(false, v.seq, v.part == 0, last);
            int[] idx = v.indices.Length > 0 || v.values.Length == 0 ? v.indices : order;
            int[] vidx = v.vec3Indices.Length > 0 || v.vec3Values.Length == 0 ? v.vec3Indices : vec3Order;
            for (int k = 0; k < idx.Length; k++) { int i = idx[k]; Values[i] = v.values[k]; Quality[i] = 0; Known[i] = true; }
            for (int k = 0; k < vidx.Length; k++)
            {
                int i = vidx[k];
                for (int c = 0; c < 3; c++) Vec3[3 * i + c] = v.vec3Values[3 * k + c];
                Quality[i] = 0; Known[i] = true;
            }
            for (int k = 0; k < v.flagged.Length; k++) Quality[v.flagged[k]] = (byte)v.flaggedQuality[k];  // every other entry is good
            if (last) { Seq = v.seq; Tick = v.tick; SimTime = v.simTime; }
        }

        public void Apply(StateMessage s)
        {
            bool first = s.part == 0, last = s.part >= s.parts - 1;
            Begin(s.type == "snapshot", s.seq, first, last);
            if (s.type == "snapshot")  // the order of compact "values": all parts' indices
            {
                order = first ? s.indices : Concat(order, s.indices);
                vec3Order = first ? s.vec3Indices : Concat(vec3Order, s.vec3Indices);
            }
            for (int k = 0; k < s.indices.Length; k++) { int i = s.indices[k]; Values[i] = s.values[k]; Quality[i] = (byte)s.quality[k]; Known[i] = true; }
            for (int k = 0; k < s.vec3Indices.Length; k++)
            {
                int i = s.vec3Indices[k];
                for (int c = 0; c < 3; c++) Vec3[3 * i + c] = s.vec3Values[3 * k + c];
                Quality[i] = (byte)s.vec3Quality[k]; Known[i] = true;
            }
            if (last) { Seq = s.seq; Tick = s.tick; SimTime = s.simTime; }
        }

        public void Apply(BinaryFrame f)
        {
            Begin(f.IsSnapshot, f.Seq, f.First, f.Last);
            for (int k = 0; k < f.Indices.Length; k++) { int i = f.Indices[k]; Values[i] = f.Values[k]; Quality[i] = f.Quality[k]; Known[i] = true; }
            for (int k = 0; k < f.Vec3Indices.Length; k++)
            {
                int i = f.Vec3Indices[k];
                for (int c = 0; c < 3; c++) Vec3[3 * i + c] = f.Vec3Values[3 * k + c];
                Quality[i] = f.Vec3Quality[k]; Known[i] = true;
            }
            if (f.Last) { Seq = f.Seq; Tick = f.Tick; SimTime = f.SimTime; }
        }

        // Dispatch one text message; returns its type ("hello", "ack", ...).
        public string ApplyText(string json)
        {
            var env = TwinJson.Parse<Envelope>(json);
            if (env.type == "hello") OnHello(TwinJson.Parse<Hello>(json));
            else if (env.type == "snapshot" || env.type == "delta") Apply(TwinJson.Parse<StateMessage>(json));
            else if (env.type == "values") Apply(TwinJson.Parse<ValuesMessage>(json));
            return env.type;
        }
    }

    // ---- connection -------------------------------------------------------------------
    public class Incoming { public bool Binary; public string Text; public byte[] Data; public int Length; }

    // A ClientWebSocket whose receive loop runs on the thread pool and queues messages;
    // Unity drains Inbox in Update() (the main thread), tests drain it directly.
    public class TwinConnection : IDisposable
    {
        public readonly ClientWebSocket Socket = new ClientWebSocket();
        public readonly ConcurrentQueue<Incoming> Inbox = new ConcurrentQueue<Incoming>();
        public string CloseReason;
        readonly CancellationTokenSource cts = new CancellationTokenSource();
        readonly SemaphoreSlim sendLock = new SemaphoreSlim(1, 1);
        int ids;

        public async Task ConnectAsync(Uri uri, string token)
        {
            Socket.Options.AddSubProtocol("twinstage.v1");
            if (!string.IsNullOrEmpty(token)) Socket.Options.SetRequestHeader("Authorization", "Bearer " + token);
            // this client reads the rows hello (its attribute table); without ?hello= a big scene's server sends compact
            if (!uri.Query.Contains("hello="))
            {
                var b = new UriBuilder(uri);
                b.Query = (b.Query.Length > 1 ? b.Query.Substring(1) + "&" : "") + "hello=rows";
                uri = b.Uri;
            }
            await Socket.ConnectAsync(uri, cts.Token);
            _ = Task.Run(ReceiveLoop);
        }

        public string NextId() { return "cs-" + Interlocked.Increment(ref ids); }

        public async Task SendAsync(object message)
        {
            var bytes = Encoding.UTF8.GetBytes(TwinJson.ToJson(message));
            await sendLock.WaitAsync();
            try { await Socket.SendAsync(new ArraySegment<byte>(bytes), WebSocketMessageType.Text, true, cts.Token); }
            finally { sendLock.Release(); }
        }

        async Task ReceiveLoop()
        {
            var buffer = new byte[1 << 16];
            var ms = new MemoryStream();
            try
            {
                while (Socket.State == WebSocketState.Open)
                {
                    ms.SetLength(0);
                    WebSocketReceiveResult r;
                    do
                    {
                        r = await Socket.ReceiveAsync(new ArraySegment<byte>(buffer), cts.Token);
                        if (r.MessageType == WebSocketMessageType.Close) { CloseReason = Socket.CloseStatus + " " + Socket.CloseStatusDescription; return; }
                        ms.Write(buffer, 0, r.Count);
                    } while (!r.EndOfMessage);
                    var data = ms.ToArray();
                    if (r.MessageType == WebSocketMessageType.Binary) Inbox.Enqueue(new Incoming { Binary = true, Data = data, Length = data.Length });
                    else Inbox.Enqueue(new Incoming { Text = Encoding.UTF8.GetString(data) });
                }
            }
            catch (Exception e) { CloseReason = e.GetType().Name + ": " + e.Message; }
        }

        public async Task CloseAsync()
        {
            if (Socket.State == WebSocketState.Open)
            {
                try { await Socket.CloseAsync(WebSocketCloseStatus.NormalClosure, "bye", CancellationToken.None); } catch (Exception) { }
            }
            cts.Cancel();
        }

        public void Dispose() { cts.Cancel(); Socket.Dispose(); }
    }
}
