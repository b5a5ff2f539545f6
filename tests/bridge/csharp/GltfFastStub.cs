// The glTFast (com.unity.cloud.gltfast) API examples/unity/TwinGltfScene.cs uses, with its real
// signatures, so that mcs can type-check the MonoBehaviour outside Unity. Compile-only.
using System;
using System.Threading;
using System.Threading.Tasks;
namespace GLTFast
{
    public class ImportSettings { }
    public class GltfImport
    {
        public Task<bool> LoadGltfBinary(byte[] bytes, Uri uri = null, ImportSettings importSettings = null, CancellationToken cancellationToken = default(CancellationToken))
        { return Task.FromResult(false); }
        public Task<bool> Load(string url, ImportSettings importSettings = null, CancellationToken cancellationToken = default(CancellationToken))
        { return Task.FromResult(false); }
        public Task<bool> InstantiateMainSceneAsync(UnityEngine.Transform parent, CancellationToken cancellationToken = default(CancellationToken))
        { return Task.FromResult(false); }
    }
}
