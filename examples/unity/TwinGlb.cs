// The scene's GLB for Unity, without UnityEngine: download it from the bridge (same token as the
// websocket, checked against hello.glb.sha256) and read its node tree with each node's
// extras.twinId (the prim path that the websocket state refers to). glTFast does not expose
// glTF extras on the GameObjects it creates; TwinGltfScene.cs walks this tree beside glTFast's
// GameObjects to map them to twin prims.
using System;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Net;
using System.Security.Cryptography;
using System.Text;
using System.Threading.Tasks;

namespace TwinStage.Bridge
{
    public class GlbNode
    {
        public int Index; public string Name; public string TwinId; public string UsdPath; public int Parent = -1;
        public int[] Children = new int[0]; public bool HasMesh;
    }

    public class GlbException : Exception { public GlbException(string m) : base(m) { } }

    public static class GlbReader
    {
        // The nodes of a GLB (binary glTF 2.0) and the root nodes of its default scene.
        public static List<GlbNode> Read(byte[] data, out int[] roots)
        {
            if (data.Length < 20 || Encoding.ASCII.GetString(data, 0, 4) != "glTF") throw new GlbException("not a GLB file (magic)");
            uint version = BitConverter.ToUInt32(data, 4), length = BitConverter.ToUInt32(data, 8);
            if (version != 2) throw new GlbException("GLB version " + version + ", expected 2");
            if (length > data.Length) throw new GlbException("GLB truncated: header says " + length + " bytes, got " + data.Length);
            int n = (int)BitConverter.ToUInt32(data, 12);
            if (Encoding.ASCII.GetString(data, 16, 4) != "JSON" || 20 + n > length) throw new GlbException("GLB: first chunk is not a JSON chunk");
            var doc = MiniJson.Parse(Encoding.UTF8.GetString(data, 20, n)) as Dictionary<string, object>;
            if (doc == null) throw new GlbException("GLB: JSON chunk is not an object");
            var nodes = new List<GlbNode>();
            var list = Get<List<object>>(doc, "nodes") ?? new List<object>();
            for (int i = 0; i < list.Count; i++)
            {
                var d = list[i] as Dictionary<string, object> ?? new Dictionary<string, object>();
                var extras = Get<Dictionary<string, object>>(d, "extras");
                var kids = Get<List<object>>(d, "children") ?? new List<object>();
                var node = new GlbNode { Index = i, Name = Get<string>(d, "name") ?? "", HasMesh = d.ContainsKey("mesh"), Children = new int[kids.Count] };
                if (extras != null) { node.TwinId = Get<string>(extras, "twinId"); node.UsdPath = Get<string>(extras, "usdPath"); }
                for (int k = 0; k < kids.Count; k++) node.Children[k] = (int)(double)kids[k];
                nodes.Add(node);
            }
            foreach (var node in nodes)
                foreach (var c in node.Children)
                {
                    if (c < 0 || c >= nodes.Count) throw new GlbException("GLB: node " + node.Index + " has a child " + c + " that does not exist");
                    nodes[c].Parent = node.Index;
                }
            var scenes = Get<List<object>>(doc, "scenes");
            int scene = doc.ContainsKey("scene") ? (int)(double)doc["scene"] : 0;
            var sceneNodes = scenes != null && scene < scenes.Count ? Get<List<object>>(scenes[scene] as Dictionary<string, object>, "nodes") : null;
            roots = sceneNodes == null ? new int[0] : sceneNodes.ConvertAll(x => (int)(double)x).ToArray();
            return nodes;
        }

        static T Get<T>(Dictionary<string, object> d, string key) where T : class
        {
            object v;
            return d != null && d.TryGetValue(key, out v) ? v as T : null;
        }

        // twinId -> node index, for every node that has one.
        public static Dictionary<string, int> TwinNodes(List<GlbNode> nodes)
        {
            var map = new Dictionary<string, int>();
            foreach (var n in nodes) if (!string.IsNullOrEmpty(n.TwinId) && !map.ContainsKey(n.TwinId)) map[n.TwinId] = n.Index;
            return map;
        }
    }

    public static class TwinGltfMap
    {
        // Positions in each parent's children list from the scene's root node down to node i
        // (glTFast creates one GameObject per node, children in this order).
        public static List<int> ChildPath(List<GlbNode> nodes, int i)
        {
            var path = new List<int>();
            for (int guard = 0; nodes[i].Parent >= 0 && guard < nodes.Count; guard++)
            {
                var parent = nodes[nodes[i].Parent];
                path.Insert(0, Array.IndexOf(parent.Children, i));
                i = parent.Index;
            }
            return path;
        }

        // glTF (right-handed) -> Unity (left-handed), as glTFast converts node translations.
        public static double[] ToUnity(double[] gltf) { return new[] { -gltf[0], gltf[1], gltf[2] }; }
    }

    public static class SceneDownload
    {
        // ws://host:port/... + "/scene.glb" -> http://host:port/scene.glb
        public static Uri GlbUri(Uri websocket, string path)
        {
            var b = new UriBuilder(websocket) { Scheme = websocket.Scheme == "wss" ? "https" : "http", Query = "" };
            b.Port = websocket.Port;
            return new Uri(b.Uri, path);
        }

        // The GLB bytes (Authorization: Bearer TOKEN), checked against the hello's sha256 (when it has one:
        // a big scene's GLB may still be being built, hello.glb.status "building"; the server then answers
        // 503 with Retry-After, and this waits and asks again, up to maxWaitSeconds in all).
        // HttpWebRequest: in every .NET profile Unity and Mono ship (no System.Net.Http needed).
        public static async Task<byte[]> FetchAsync(Uri uri, string token, string sha256, int maxWaitSeconds = 600)
        {
            byte[] data = null;
            for (int waited = 0; data == null; )
            {
                var req = (HttpWebRequest)WebRequest.Create(uri);
                req.Proxy = null;
                if (!string.IsNullOrEmpty(token)) req.Headers[HttpRequestHeader.Authorization] = "Bearer " + token;
                int retry = 0;
                try
                {
                    using (var resp = (HttpWebResponse)await req.GetResponseAsync())
                    using (var body = resp.GetResponseStream())
                    using (var ms = new MemoryStream())
                    {
                        await body.CopyToAsync(ms);
                        data = ms.ToArray();
                    }
                }
                catch (WebException e) when (e.Response is HttpWebResponse)
                {
                    var r = (HttpWebResponse)e.Response;
                    if ((int)r.StatusCode != 503 || waited >= maxWaitSeconds || !int.TryParse(r.Headers["Retry-After"], out retry))
                        throw new GlbException("GET " + uri.AbsolutePath + ": HTTP " + (int)r.StatusCode + " " + r.StatusDescription);
                    retry = Math.Max(1, Math.Min(60, retry));
                }
                if (data == null) { await Task.Delay(retry * 1000); waited += retry; }
            }
            if (!string.IsNullOrEmpty(sha256))
            {
                string got;
                using (var h = SHA256.Create()) got = BitConverter.ToString(h.ComputeHash(data)).Replace("-", "").ToLowerInvariant();
                if (got != sha256) throw new GlbException("GET " + uri.AbsolutePath + ": sha256 " + got + " is not the announced " + sha256);
            }
            return data;
        }
    }

    // Enough JSON for a glTF document: objects, arrays, strings, numbers (double), true/false/null.
    public static class MiniJson
    {
        public static object Parse(string s) { int i = 0; var v = Value(s, ref i); Ws(s, ref i); if (i != s.Length) throw Err(s, i, "trailing text"); return v; }

        static GlbException Err(string s, int i, string what) { return new GlbException("GLB JSON at character " + i + ": " + what); }
        static void Ws(string s, ref int i) { while (i < s.Length && char.IsWhiteSpace(s[i])) i++; }

        static object Value(string s, ref int i)
        {
            Ws(s, ref i);
            if (i >= s.Length) throw Err(s, i, "unexpected end");
            char c = s[i];
            if (c == '{')
            {
                var d = new Dictionary<string, object>(); i++; Ws(s, ref i);
                if (i < s.Length && s[i] == '}') { i++; return d; }
                while (true)
                {
                    Ws(s, ref i);
                    if (i >= s.Length || s[i] != '"') throw Err(s, i, "expected a key");
                    var k = Str(s, ref i); Ws(s, ref i);
                    if (i >= s.Length || s[i] != ':') throw Err(s, i, "expected ':'");
                    i++; d[k] = Value(s, ref i); Ws(s, ref i);
                    if (i < s.Length && s[i] == ',') { i++; continue; }
                    if (i < s.Length && s[i] == '}') { i++; return d; }
                    throw Err(s, i, "expected ',' or '}'");
                }
            }
            if (c == '[')
            {
                var l = new List<object>(); i++; Ws(s, ref i);
                if (i < s.Length && s[i] == ']') { i++; return l; }
                while (true)
                {
                    l.Add(Value(s, ref i)); Ws(s, ref i);
                    if (i < s.Length && s[i] == ',') { i++; continue; }
                    if (i < s.Length && s[i] == ']') { i++; return l; }
                    throw Err(s, i, "expected ',' or ']'");
                }
            }
            if (c == '"') return Str(s, ref i);
            if (string.CompareOrdinal(s, i, "true", 0, 4) == 0) { i += 4; return true; }
            if (string.CompareOrdinal(s, i, "false", 0, 5) == 0) { i += 5; return false; }
            if (string.CompareOrdinal(s, i, "null", 0, 4) == 0) { i += 4; return null; }
            int j = i;
            while (j < s.Length && "+-0123456789.eE".IndexOf(s[j]) >= 0) j++;
            double v;
            if (j == i || !double.TryParse(s.Substring(i, j - i), NumberStyles.Float, CultureInfo.InvariantCulture, out v)) throw Err(s, i, "unexpected character");
            i = j;
            return v;
        }

        static string Str(string s, ref int i)
        {
            var sb = new StringBuilder(); i++;
            while (i < s.Length && s[i] != '"')
            {
                if (s[i] == '\\')
                {
                    if (++i >= s.Length) break;
                    char e = s[i];
                    if (e == 'u')
                    {
                        if (i + 4 >= s.Length) throw Err(s, i, "bad \\u escape");
                        sb.Append((char)int.Parse(s.Substring(i + 1, 4), NumberStyles.HexNumber)); i += 4;
                    }
                    else sb.Append(e == 'n' ? '\n' : e == 't' ? '\t' : e == 'r' ? '\r' : e == 'b' ? '\b' : e == 'f' ? '\f' : e);
                }
                else sb.Append(s[i]);
                i++;
            }
            if (i >= s.Length) throw Err(s, i, "unterminated string");
            i++;
            return sb.ToString();
        }
    }
}
