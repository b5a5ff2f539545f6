// Runs examples/unity/TwinGlb.cs (Mono) on a recorded GLB and against a live bridge:
//   mono TwinGlbTest.exe RECORDED.glb ws://127.0.0.1:PORT/ TOKEN
// Prints RECORDED/PRIM/SERVED lines for the test to compare, "OK ..." per check, "FAIL ..." and
// exit code 1 on the first failure.
using System;
using System.Linq;
using System.Threading;
using TwinStage.Bridge;

public static class TwinGlbTest
{
    static void Fail(string why) { Console.WriteLine("FAIL " + why); Environment.Exit(1); }

    public static int Main(string[] args)
    {
        TwinJson.FromJson = MiniJsonUtility.FromJson;
        TwinJson.ToJson = MiniJsonUtility.ToJson;
        string recorded = args[0], url = args[1], token = args[2];

        int[] roots;
        var nodes = GlbReader.Read(System.IO.File.ReadAllBytes(recorded), out roots);
        if (roots.Length != 1) Fail("recorded GLB: expected one root node, got " + roots.Length);
        foreach (var kv in GlbReader.TwinNodes(nodes)) Console.WriteLine("RECORDED " + kv.Key + " " + nodes[kv.Value].Name);

        var conn = new TwinConnection();
        conn.ConnectAsync(new Uri(url), token).Wait();
        var state = new TwinState();
        var until = DateTime.UtcNow.AddSeconds(10);
        while (state.Hello == null && DateTime.UtcNow < until)
        {
            Incoming m;
            if (conn.Inbox.TryDequeue(out m)) { if (!m.Binary) state.ApplyText(m.Text); } else Thread.Sleep(2);
        }
        var h = state.Hello;
        if (h == null) Fail("no hello");
        if (h.glb == null || string.IsNullOrEmpty(h.glb.url)) Fail("hello announces no glb");
        Console.WriteLine("OK hello glb=" + h.glb.url + " bytes=" + h.glb.bytes + " mediaType=" + h.glb.mediaType);
        foreach (var p in h.prims) Console.WriteLine("PRIM " + p.path);

        var uri = SceneDownload.GlbUri(new Uri(url), h.glb.url);
        var data = SceneDownload.FetchAsync(uri, token, h.glb.sha256).Result;
        if (data.Length != h.glb.bytes) Fail("served " + data.Length + " bytes, hello said " + h.glb.bytes);
        Console.WriteLine("OK fetched " + uri.AbsolutePath + " " + data.Length + " bytes, sha256 matches");
        var served = GlbReader.Read(data, out roots);
        var twins = GlbReader.TwinNodes(served);
        foreach (var kv in twins) Console.WriteLine("SERVED " + kv.Key + " " + served[kv.Value].Name);
        // what TwinGltfScene does: the path of root children from the scene root to each twin node
        foreach (var p in h.prims)
        {
            int i;
            if (!twins.TryGetValue(p.path, out i)) Fail("no GLB node for " + p.path);
            var path = TwinGltfMap.ChildPath(served, i);
            Console.WriteLine("MAP " + p.path + " " + string.Join("/", path.Select(x => x.ToString()).ToArray()));
        }

        try { SceneDownload.FetchAsync(uri, "not-the-token", null).Wait(); Fail("fetched with a wrong token"); }
        catch (AggregateException e) when (e.InnerException is GlbException) { Console.WriteLine("OK refused: " + e.InnerException.Message); }
        try { SceneDownload.FetchAsync(uri, token, new string('0', 64)).Wait(); Fail("accepted a wrong sha256"); }
        catch (AggregateException e) when (e.InnerException is GlbException) { Console.WriteLine("OK checked: " + e.InnerException.Message); }
        foreach (var bad in new[] { data.Take(10).ToArray(), data.Take(60).ToArray(), new byte[] { 0x67, 0x6c, 0x54, 0x46, 1, 0, 0, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 } })
        {
            try { GlbReader.Read(bad, out roots); Fail("read a broken GLB of " + bad.Length + " bytes"); }
            catch (GlbException e) { Console.WriteLine("OK bad glb: " + e.Message); }
        }
        conn.CloseAsync().Wait();
        Console.WriteLine("DONE");
        return 0;
    }
}
