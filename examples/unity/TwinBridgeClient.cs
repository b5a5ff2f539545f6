// Unity MonoBehaviour: connects to a twinstage bridge, builds (or finds) one GameObject per twin
// asset, colours it by state and moves assets whose vec3 attribute drives xformOp:translate.
// Needs TwinProtocol.cs beside it. Uses System.Net.WebSockets.ClientWebSocket (desktop and
// mobile players; WebGL builds need a JS websocket plugin such as NativeWebSocket instead).
//
// USD is right-handed (Z up here); Unity is left-handed Y up: (x, y, z) -> (x, z, y), which
// swaps handedness correctly, times metersPerUnit.
using System;
using System.Collections.Generic;
using UnityEngine;
using TwinStage.Bridge;

public class TwinBridgeClient : MonoBehaviour
{
    [Header("Connection")]
    public string serverUrl = "ws://127.0.0.1:8765/";
    [Tooltip("A bridge token (viewer reads; operator may set inputs). Leave empty for anonymous.")]
    public string token = "";
    public bool binary = true;
    [Tooltip("Prim path prefixes to subscribe to; empty = everything.")]
    public string[] prefixes = new string[0];
    public float maxRate = 0f;

    [Header("Scene")]
    [Tooltip("Create a cube per asset; otherwise look up children of this object named like the prim (last path part).")]
    public bool buildScene = true;

    [Tooltip("Objects come from elsewhere (TwinGltfScene: the scene's GLB via glTFast); do not build or look up any.")]
    public bool externalScene = false;

    public TwinState State { get; private set; } = new TwinState();
    public string Status { get; private set; } = "disconnected";

    TwinConnection connection;
    readonly Dictionary<int, Transform> moverOf = new Dictionary<int, Transform>();
    readonly Dictionary<int, PrimInfo> moverPrim = new Dictionary<int, PrimInfo>();
    readonly Dictionary<string, Transform> objects = new Dictionary<string, Transform>();
    readonly Dictionary<string, Action<Ack, ErrorMessage>> replies = new Dictionary<string, Action<Ack, ErrorMessage>>();
    readonly List<Alarm> alarms = new List<Alarm>();

    async void Start()
    {
        TwinJson.FromJson = (json, type) => JsonUtility.FromJson(json, type);
        TwinJson.ToJson = obj => JsonUtility.ToJson(obj);
        connection = new TwinConnection();
        Status = "connecting";
        try { await connection.ConnectAsync(new Uri(serverUrl), token); }
        catch (Exception e) { Status = "failed: " + e.Message; Debug.LogError("twinstage: " + Status); }
    }

    void Update()
    {
        if (connection == null) return;
        Incoming msg;
        bool changed = false;
        while (connection.Inbox.TryDequeue(out msg))
        {
            if (msg.Binary) { State.Apply(BinaryFrame.Decode(msg.Data, msg.Length)); changed = true; continue; }
            string type = State.ApplyText(msg.Text);
            switch (type)
            {
                case "hello":
                    if (externalScene) { } else if (buildScene && objects.Count == 0) Build(State.Hello); else MapExisting(State.Hello);
                    Status = "subscribing";
                    var sub = new SubscribeMessage { id = connection.NextId(), prefixes = prefixes, encoding = binary ? "binary" : "json", maxRate = maxRate };
                    _ = connection.SendAsync(sub);
                    break;
                case "snapshot": case "delta": changed = true; Status = "live"; break;
                case "ack": { var a = JsonUtility.FromJson<Ack>(msg.Text); Reply(a.id, a, null); break; }
                case "error":
                {
                    var e = JsonUtility.FromJson<ErrorMessage>(msg.Text);
                    if (!Reply(e.id, null, e)) Debug.LogWarning($"twinstage: {e.code}: {e.message}");
                    break;
                }
                case "alarm": alarms.Add(JsonUtility.FromJson<Alarm>(msg.Text)); break;
            }
        }
        if (changed) Refresh();
    }

    bool Reply(string id, Ack ack, ErrorMessage err)
    {
        Action<Ack, ErrorMessage> cb;
        if (string.IsNullOrEmpty(id) || !replies.TryGetValue(id, out cb)) return false;
        replies.Remove(id);
        cb(ack, err);
        return true;
    }

    // Set a number attribute (operator token needed); onReply gets the ack or the error.
    public void SetValue(string prim, string attribute, double value, Action<Ack, ErrorMessage> onReply = null)
    {
        var m = new SetNumberMessage { id = connection.NextId(), prim = prim, attribute = attribute, value = value };
        if (onReply != null) replies[m.id] = onReply;
        _ = connection.SendAsync(m);
    }

    public void Command(string command, int steps = 0, Action<Ack, ErrorMessage> onReply = null)
    {
        var m = new CommandMessage { id = connection.NextId(), command = command, steps = steps };
        if (onReply != null) replies[m.id] = onReply;
        _ = connection.SendAsync(m);
    }

    Vector3 ToUnity(double[] v, float scale) { return new Vector3((float)v[0], (float)v[2], (float)v[1]) * scale; }

    // Objects placed by the scene's GLB (glTFast): prim path -> the GameObject of its glTF node.
    // Those nodes sit below the GLB's root node, which converts stage axes and units, so a node's
    // local position is in stage coordinates (mirrored in x by glTFast's handedness conversion).
    bool gltfPlacement;
    public void UseGltfObjects(IDictionary<string, Transform> map)
    {
        objects.Clear();
        foreach (var kv in map) objects[kv.Key] = kv.Value;
        gltfPlacement = true;
        if (State.Hello != null) { Movers(State.Hello); Refresh(); }
    }

    // A cube per asset (what buildScene does), for a server without a GLB.
    public void BuildBoxes() { if (State.Hello != null && objects.Count == 0) { gltfPlacement = false; Build(State.Hello); } }

    public void Build(Hello h)
    {
        float s = (float)h.metersPerUnit;
        foreach (var p in h.prims)
        {
            var go = GameObject.CreatePrimitive(PrimitiveType.Cube);
            go.name = p.path;
            go.transform.SetParent(transform, false);
            bool hasSize = p.size[0] > 0 || p.size[1] > 0 || p.size[2] > 0;
            go.transform.localScale = hasSize ? ToUnity(p.size, s) : Vector3.one * 0.2f;
            go.transform.localPosition = ToUnity(new[] { p.position[0] + p.center[0], p.position[1] + p.center[1], p.position[2] + p.center[2] }, s);
            objects[p.path] = go.transform;
        }
        Movers(h);
    }

    void MapExisting(Hello h)
    {
        foreach (var p in h.prims)
        {
            var name = p.path.Substring(p.path.LastIndexOf('/') + 1);
            var t = transform.Find(name);
            if (t != null) objects[p.path] = t;
        }
        Movers(h);
    }

    void Movers(Hello h)
    {
        moverOf.Clear();
        moverPrim.Clear();
        foreach (var p in h.prims)
        {
            Transform t;
            if (!objects.TryGetValue(p.path, out t)) continue;
            foreach (var i in p.attributes)
            {
                var a = h.attributes[i];
                if (a.type == "vec3" && a.drives.Contains("xformOp:translate")) { moverOf[i] = t; moverPrim[i] = p; }
            }
        }
    }

    void Refresh()
    {
        var h = State.Hello;
        float s = (float)h.metersPerUnit;
        foreach (var p in h.prims)
        {
            Transform t;
            if (p.colorBy < 0 || !State.Known[p.colorBy] || !objects.TryGetValue(p.path, out t)) continue;
            var a = h.attributes[p.colorBy];
            int q = State.Quality[p.colorBy];
            SetColor(t, (q & 16) != 0 ? Color.magenta : (q & 2) != 0 ? Color.red
                : Ramp(a.max > a.min ? (float)((State.Values[p.colorBy] - a.min) / (a.max - a.min)) : 0.5f));
        }
        foreach (var kv in moverOf)
        {
            var p = moverPrim[kv.Key];
            int i = kv.Key;
            if (gltfPlacement)
            {
                var g = TwinGltfMap.ToUnity(new[] { p.origin[0] + State.Vec3[3 * i], p.origin[1] + State.Vec3[3 * i + 1], p.origin[2] + State.Vec3[3 * i + 2] });
                kv.Value.localPosition = new Vector3((float)g[0], (float)g[1], (float)g[2]);
                continue;
            }
            var local = new[] { p.origin[0] + State.Vec3[3 * i] + p.center[0], p.origin[1] + State.Vec3[3 * i + 1] + p.center[1],
                                p.origin[2] + State.Vec3[3 * i + 2] + p.center[2] };
            kv.Value.localPosition = ToUnity(local, s);
        }
    }

    // Every renderer below t (a glTF node may hold several); glTFast's shaders name the colour
    // baseColorFactor (built-in/Shader Graph) or _BaseColor (URP), Unity's own shaders _Color.
    static readonly string[] colorProperties = { "baseColorFactor", "_BaseColor", "_Color" };
    static void SetColor(Transform t, Color c)
    {
        foreach (var r in t.GetComponentsInChildren<Renderer>())
            foreach (var m in r.materials)
                foreach (var name in colorProperties)
                    if (m.HasProperty(name)) m.SetColor(name, c);
    }

    static Color Ramp(float t)
    {
        t = Mathf.Clamp01(t);
        Color[] c = { new Color(0.1f, 0.3f, 0.9f), new Color(0.1f, 0.8f, 0.9f), new Color(0.2f, 0.8f, 0.2f), new Color(0.95f, 0.85f, 0.1f), new Color(0.9f, 0.15f, 0.1f) };
        float x = t * 4f;
        int k = Mathf.Min(3, (int)x);
        return Color.Lerp(c[k], c[k + 1], x - k);
    }

    async void OnDestroy()
    {
        if (connection != null) { await connection.CloseAsync(); connection.Dispose(); }
    }
}
