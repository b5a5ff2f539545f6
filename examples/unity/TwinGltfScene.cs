// Unity MonoBehaviour: shows the twin's real scene. It downloads the GLB that the bridge announces
// in hello (TwinGlb.cs: same token, sha256 checked), loads it with glTFast (GltfImport +
// InstantiateMainSceneAsync) under this GameObject, and hands TwinBridgeClient the GameObject of
// every node whose extras.twinId is a twin prim, so state colours and moves the real geometry.
// Without a GLB in hello (an older server, or one without a stage) it falls back to a cube per asset.
//
// Needs glTFast (com.unity.cloud.gltfast, namespace GLTFast) and TwinBridgeClient on the same
// GameObject. glTFast does not put glTF extras on GameObjects, so the mapping walks the GLB's node
// tree (TwinGlb.cs) beside the GameObjects glTFast created, child by child, checking names.
using System;
using System.Collections.Generic;
using System.Threading.Tasks;
using UnityEngine;
using TwinStage.Bridge;

[RequireComponent(typeof(TwinBridgeClient))]
public class TwinGltfScene : MonoBehaviour
{
    [Tooltip("Seconds to wait for the bridge's hello before giving up.")]
    public float helloTimeout = 15f;

    public string Status { get; private set; } = "waiting for hello";
    public readonly Dictionary<string, Transform> Nodes = new Dictionary<string, Transform>();

    TwinBridgeClient client;

    void Awake()
    {
        client = GetComponent<TwinBridgeClient>();
        client.externalScene = true;  // objects come from the GLB (or BuildBoxes below)
    }

    async void Start()
    {
        float waited = 0f;
        while (client.State.Hello == null && waited < helloTimeout) { await Task.Delay(50); waited += 0.05f; }
        var h = client.State.Hello;
        if (h == null) { Status = "no hello from " + client.serverUrl; Debug.LogWarning("twinstage: " + Status); return; }
        if (h.glb == null || string.IsNullOrEmpty(h.glb.url)) { Status = "no GLB announced: a cube per asset"; client.BuildBoxes(); return; }
        try
        {
            var uri = SceneDownload.GlbUri(new Uri(client.serverUrl), h.glb.url);
            Status = "downloading " + uri.AbsolutePath;
            byte[] data = await SceneDownload.FetchAsync(uri, client.token, h.glb.sha256);
            var gltf = new GLTFast.GltfImport();
            if (!await gltf.LoadGltfBinary(data, uri)) throw new GlbException("glTFast could not load " + uri.AbsolutePath);
            if (!await gltf.InstantiateMainSceneAsync(transform)) throw new GlbException("glTFast could not instantiate the scene");
            Map(data);
            client.UseGltfObjects(Nodes);
            Status = "scene loaded: " + Nodes.Count + " twin nodes";
        }
        catch (Exception e)
        {
            Status = "GLB failed (" + e.Message + "): a cube per asset";
            Debug.LogWarning("twinstage: " + Status);
            client.BuildBoxes();
        }
    }

    // twinId -> the GameObject glTFast made for that node.
    void Map(byte[] data)
    {
        int[] roots;
        var nodes = GlbReader.Read(data, out roots);
        if (roots.Length == 0) return;
        var root = FindChild(transform, -1, nodes[roots[0]].Name) ?? transform;
        foreach (var kv in GlbReader.TwinNodes(nodes))
        {
            Transform t = root;
            int node = roots[0];
            foreach (var k in TwinGltfMap.ChildPath(nodes, kv.Value))
            {
                node = nodes[node].Children[k];
                t = t == null ? null : FindChild(t, k, nodes[node].Name);
            }
            if (t != null) Nodes[kv.Key] = t;
            else Debug.LogWarning("twinstage: no GameObject for glTF node " + nodes[kv.Value].Name + " (" + kv.Key + ")");
        }
    }

    // The index-th child when its name matches, else the first child of that name (glTFast may add
    // GameObjects of its own, e.g. one per extra mesh primitive).
    static Transform FindChild(Transform t, int index, string name)
    {
        if (index >= 0 && index < t.childCount && t.GetChild(index).name == name) return t.GetChild(index);
        for (int i = 0; i < t.childCount; i++) if (t.GetChild(i).name == name) return t.GetChild(i);
        return null;
    }
}
