// Runs examples/unity/TwinProtocol.cs against a live twinstage bridge (Mono):
//   mono TwinProtocolTest.exe ws://127.0.0.1:PORT/ TOKEN /Prim attribute value
// Prints one "OK step ..." line per check, "FAIL ..." and exit code 1 on the first failure.
using System;
using System.Linq;
using System.Threading;
using TwinStage.Bridge;

public static class TwinProtocolTest
{
    static TwinConnection conn;
    static TwinState state = new TwinState();

    static void Fail(string why) { Console.WriteLine("FAIL " + why + (conn != null && conn.CloseReason != null ? " (closed: " + conn.CloseReason + ")" : "")); Environment.Exit(1); }

    // Drain the inbox, applying state, until pred holds (or time runs out).
    static Incoming WaitFor(Func<Incoming, bool> pred, double seconds, string what)
    {
        var until = DateTime.UtcNow.AddSeconds(seconds);
        while (DateTime.UtcNow < until)
        {
            Incoming m;
            if (!conn.Inbox.TryDequeue(out m)) { Thread.Sleep(2); continue; }
            if (m.Binary) { var f = BinaryFrame.Decode(m.Data, m.Length); if (!f.First) laterParts++; state.Apply(f); }
            else
            {
                string t = state.ApplyText(m.Text);
                if ((t == "snapshot" || t == "delta" || t == "values") && TwinJson.Parse<StateMessage>(m.Text).part > 0) laterParts++;
            }
            if (pred(m)) return m;
        }
        Fail("timed out waiting for " + what);
        return null;
    }

    static bool IsType(Incoming m, string type) { return !m.Binary && TwinJson.Parse<Envelope>(m.Text).type == type; }

    // The last part of a snapshot (a big one comes in parts: the state is complete only after its last)
    static int laterParts;
    static bool IsSnapshotEnd(Incoming m)
    {
        if (m.Binary) { var f = BinaryFrame.Decode(m.Data, m.Length); return f.IsSnapshot && f.Last; }
        if (!IsType(m, "snapshot")) return false;
        var s = TwinJson.Parse<StateMessage>(m.Text);
        return s.part >= s.parts - 1;
    }

    public static int Main(string[] args)
    {
        TwinJson.FromJson = MiniJsonUtility.FromJson;
        TwinJson.ToJson = MiniJsonUtility.ToJson;
        string url = args[0], token = args[1], prim = args[2], attribute = args[3];
        double target = double.Parse(args[4], System.Globalization.CultureInfo.InvariantCulture);
        conn = new TwinConnection();
        conn.ConnectAsync(new Uri(url), token).Wait();
        Console.WriteLine("OK connected " + conn.Socket.SubProtocol);

        WaitFor(m => IsType(m, "hello"), 10, "hello");
        var h = state.Hello;
        if (h.attributes.Length == 0 || h.prims.Length == 0) Fail("empty hello");
        Console.WriteLine("OK hello role=" + h.role + " attributes=" + h.attributes.Length + " prims=" + h.prims.Length + " session=" + h.session);

        // binary subscription: ack, snapshot, then deltas with increasing seq
        var sub = new SubscribeMessage { id = conn.NextId(), encoding = "binary" };
        conn.SendAsync(sub).Wait();
        var ackMsg = WaitFor(m => IsType(m, "ack"), 10, "subscribe ack");
        var ack = TwinJson.Parse<Ack>(ackMsg.Text);
        if (ack.id != sub.id || ack.of != "subscribe") Fail("ack does not match: " + ackMsg.Text);
        WaitFor(IsSnapshotEnd, 10, "binary snapshot");
        if (state.Known.Count(k => k) != h.attributes.Length) Fail("snapshot does not cover every attribute");
        Console.WriteLine("OK snapshot seq=" + state.Seq + " values=" + state.Known.Count(k => k));
        long last = state.Seq;
        int deltas = 0;
        while (deltas < 5)
        {
            WaitFor(m => m.Binary && BinaryFrame.Decode(m.Data, m.Length).Last, 10, "binary delta");
            if (state.Seq <= last) Fail("seq not increasing: " + last + " -> " + state.Seq);
            last = state.Seq;
            deltas++;
        }
        Console.WriteLine("OK deltas 5 last_seq=" + last + " gaps=" + state.Gaps);

        // set: written by the JsonUtility stand-in, so an integral double goes out as e.g. 0
        var set = new SetNumberMessage { id = conn.NextId(), prim = prim, attribute = attribute, value = target };
        Console.WriteLine("SENT " + MiniJsonUtility.ToJson(set));
        conn.SendAsync(set).Wait();
        var reply = WaitFor(m => (IsType(m, "ack") || IsType(m, "error")) && TwinJson.Parse<Envelope>(m.Text).id == set.id, 10, "set reply");
        if (!IsType(reply, "ack")) Fail("set refused: " + reply.Text);
        int idx = state.IndexOf(prim, attribute);
        WaitFor(m => state.Known[idx] && state.Values[idx] == target, 10, "the set value in a delta");
        Console.WriteLine("OK set " + prim + "." + attribute + "=" + state.Values[idx]);

        // a bad set gets an error with the same id
        var bad = new SetNumberMessage { id = conn.NextId(), prim = prim, attribute = "noSuchAttribute", value = 1 };
        conn.SendAsync(bad).Wait();
        var err = WaitFor(m => IsType(m, "error") && TwinJson.Parse<Envelope>(m.Text).id == bad.id, 10, "error reply");
        Console.WriteLine("OK error code=" + TwinJson.Parse<ErrorMessage>(err.Text).code);

        // JSON encoding: the same state through JsonUtility-shaped messages
        var js = new SubscribeMessage { id = conn.NextId(), encoding = "json" };
        conn.SendAsync(js).Wait();
        WaitFor(IsSnapshotEnd, 10, "json snapshot");
        if (state.Values[idx] != target) Fail("json snapshot value " + state.Values[idx]);
        WaitFor(m => IsType(m, "delta") || IsType(m, "snapshot"), 10, "json delta");
        Console.WriteLine("OK json seq=" + state.Seq);

        // JsonUtility's default for an unset string ("") means the default encoding (json)
        var dflt = new SubscribeMessage { id = conn.NextId(), encoding = "" };
        conn.SendAsync(dflt).Wait();
        var dAck = WaitFor(m => (IsType(m, "ack") || IsType(m, "error")) && TwinJson.Parse<Envelope>(m.Text).id == dflt.id, 10, "default-encoding ack");
        if (!IsType(dAck, "ack")) Fail("encoding \"\" was refused: " + dAck.Text);
        WaitFor(IsSnapshotEnd, 10, "default-encoding snapshot");
        Console.WriteLine("OK default encoding");

        // compact JSON: "values" messages without a quality column, in the snapshot's order
        var cp = new SubscribeMessage { id = conn.NextId(), encoding = "compact" };
        conn.SendAsync(cp).Wait();
        WaitFor(IsSnapshotEnd, 10, "compact snapshot");
        WaitFor(m => IsType(m, "values"), 10, "compact values");
        WaitFor(m => IsType(m, "values"), 10, "compact values 2");
        if (state.Values[idx] != target) Fail("compact value " + state.Values[idx]);
        if (state.Known.Count(k => k) != h.attributes.Length) Fail("compact state does not cover every attribute");
        Console.WriteLine("OK compact seq=" + state.Seq);

        var cmd = new CommandMessage { id = conn.NextId(), command = "ping" };
        conn.SendAsync(cmd).Wait();
        WaitFor(m => IsType(m, "ack") && TwinJson.Parse<Ack>(m.Text).id == cmd.id, 10, "ping ack");
        Console.WriteLine("OK ping");
        Console.WriteLine("OK later parts=" + laterParts);
        conn.CloseAsync().Wait();
        Console.WriteLine("DONE");
        return 0;
    }
}
