// The few UnityEngine types examples/unity/TwinBridgeClient.cs uses, so that mcs can type-check
// the MonoBehaviour outside Unity. Compile-only: nothing here runs.
using System;
namespace UnityEngine
{
    public class Object { public string name; }
    public class Component : Object
    {
        public Transform transform;
        public T GetComponent<T>() where T : class { return null; }
        public T[] GetComponentsInChildren<T>() where T : class { return new T[0]; }
    }
    public class Behaviour : Component { }
    public class MonoBehaviour : Behaviour { }
    public class Transform : Component
    {
        public Vector3 localPosition, localScale;
        public void SetParent(Transform p, bool worldPositionStays) { }
        public Transform Find(string n) { return null; }
        public int childCount { get { return 0; } }
        public Transform GetChild(int i) { return null; }
    }
    public class GameObject : Object { public Transform transform; public static GameObject CreatePrimitive(PrimitiveType t) { return new GameObject(); } }
    public enum PrimitiveType { Cube }
    public class Renderer : Component { public Material material; public Material[] materials; }
    public class Material { public Color color; public bool HasProperty(string n) { return false; } public void SetColor(string n, Color c) { } }
    public struct Vector3
    {
        public float x, y, z;
        public Vector3(float x, float y, float z) { this.x = x; this.y = y; this.z = z; }
        public static Vector3 one { get { return new Vector3(1, 1, 1); } }
        public static Vector3 operator *(Vector3 a, float s) { return new Vector3(a.x * s, a.y * s, a.z * s); }
    }
    public struct Color
    {
        public float r, g, b, a;
        public Color(float r, float g, float b) { this.r = r; this.g = g; this.b = b; a = 1; }
        public static Color red { get { return new Color(1, 0, 0); } }
        public static Color magenta { get { return new Color(1, 0, 1); } }
        public static Color Lerp(Color a, Color b, float t) { return new Color(a.r + (b.r - a.r) * t, a.g + (b.g - a.g) * t, a.b + (b.b - a.b) * t); }
    }
    public static class Mathf { public static float Clamp01(float v) { return Math.Max(0, Math.Min(1, v)); } public static int Min(int a, int b) { return Math.Min(a, b); } }
    public static class Debug { public static void LogError(object m) { } public static void LogWarning(object m) { } }
    public static class JsonUtility
    {
        public static object FromJson(string json, Type t) { return null; }
        public static T FromJson<T>(string json) { return default(T); }
        public static string ToJson(object o) { return ""; }
    }
    public class HeaderAttribute : Attribute { public HeaderAttribute(string h) { } }
    public class TooltipAttribute : Attribute { public TooltipAttribute(string t) { } }
    public class RequireComponentAttribute : Attribute { public RequireComponentAttribute(Type t) { } }
}
