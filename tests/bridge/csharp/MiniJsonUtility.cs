// A stand-in for UnityEngine.JsonUtility outside Unity, with its rules: public fields only (in
// declaration order), arrays of primitives/strings/[Serializable] records, unknown keys ignored,
// no dictionaries, null strings written as "" and null arrays as []. Used by the Mono test of
// examples/unity/TwinProtocol.cs; it is not part of the example.
using System;
using System.Collections;
using System.Collections.Generic;
using System.Globalization;
using System.Reflection;
using System.Text;

public static class MiniJsonUtility
{
    public static object FromJson(string json, Type type)
    {
        int i = 0;
        var v = Parse(json, ref i);
        return Convert(v, type);
    }

    public static string ToJson(object obj)
    {
        var sb = new StringBuilder();
        Write(sb, obj, obj.GetType());
        return sb.ToString();
    }

    // ---- parse into Dictionary / List / string / double / long / bool / null ----
    static void Ws(string s, ref int i) { while (i < s.Length && char.IsWhiteSpace(s[i])) i++; }

    static object Parse(string s, ref int i)
    {
        Ws(s, ref i);
        char c = s[i];
        if (c == '{')
        {
            var d = new Dictionary<string, object>();
            i++; Ws(s, ref i);
            if (s[i] == '}') { i++; return d; }
            while (true)
            {
                Ws(s, ref i);
                var key = (string)Parse(s, ref i);
                Ws(s, ref i); if (s[i++] != ':') throw new FormatException("expected :");
                d[key] = Parse(s, ref i);
                Ws(s, ref i);
                if (s[i] == ',') { i++; continue; }
                if (s[i] == '}') { i++; return d; }
                throw new FormatException("expected , or } at " + i);
            }
        }
        if (c == '[')
        {
            var l = new List<object>();
            i++; Ws(s, ref i);
            if (s[i] == ']') { i++; return l; }
            while (true)
            {
                l.Add(Parse(s, ref i));
                Ws(s, ref i);
                if (s[i] == ',') { i++; continue; }
                if (s[i] == ']') { i++; return l; }
                throw new FormatException("expected , or ] at " + i);
            }
        }
        if (c == '"')
        {
            var sb = new StringBuilder();
            i++;
            while (s[i] != '"')
            {
                if (s[i] == '\\')
                {
                    i++;
                    char e = s[i];
                    if (e == 'u') { sb.Append((char)System.Convert.ToInt32(s.Substring(i + 1, 4), 16)); i += 4; }
                    else sb.Append(e == 'n' ? '\n' : e == 't' ? '\t' : e == 'r' ? '\r' : e == 'b' ? '\b' : e == 'f' ? '\f' : e);
                    i++;
                }
                else sb.Append(s[i++]);
            }
            i++;
            return sb.ToString();
        }
        if (s.Substring(i).StartsWith("true")) { i += 4; return true; }
        if (s.Substring(i).StartsWith("false")) { i += 5; return false; }
        if (s.Substring(i).StartsWith("null")) { i += 4; return null; }
        int start = i;
        while (i < s.Length && "+-0123456789.eE".IndexOf(s[i]) >= 0) i++;
        var num = s.Substring(start, i - start);
        if (num.Length == 0) throw new FormatException("unexpected character at " + start);
        return double.Parse(num, NumberStyles.Float, CultureInfo.InvariantCulture);
    }

    static object Convert(object v, Type t)
    {
        if (v == null) return t.IsValueType ? Activator.CreateInstance(t) : null;
        if (t == typeof(string)) return v as string ?? "";
        if (t == typeof(bool)) return v is bool ? v : false;
        if (t == typeof(int)) return (int)(double)v;
        if (t == typeof(long)) return (long)(double)v;
        if (t == typeof(float)) return (float)(double)v;
        if (t == typeof(double)) return (double)v;
        if (t == typeof(byte)) return (byte)(double)v;
        if (t.IsArray)
        {
            var l = v as List<object> ?? new List<object>();
            var a = Array.CreateInstance(t.GetElementType(), l.Count);
            for (int k = 0; k < l.Count; k++) a.SetValue(Convert(l[k], t.GetElementType()), k);
            return a;
        }
        if (t.IsGenericType && t.GetGenericTypeDefinition() == typeof(List<>))
        {
            var l = (IList)Activator.CreateInstance(t);
            foreach (var x in (List<object>)v) l.Add(Convert(x, t.GetGenericArguments()[0]));
            return l;
        }
        if (typeof(IDictionary).IsAssignableFrom(t)) throw new NotSupportedException("JsonUtility cannot deserialize dictionaries");
        var obj = Activator.CreateInstance(t);
        var d = v as Dictionary<string, object>;
        if (d == null) throw new FormatException("expected an object for " + t.Name);
        foreach (var f in t.GetFields(BindingFlags.Public | BindingFlags.Instance))
        {
            object x;
            if (d.TryGetValue(f.Name, out x)) f.SetValue(obj, Convert(x, f.FieldType));
        }
        return obj;
    }

    static void Write(StringBuilder sb, object v, Type t)
    {
        if (t == typeof(string)) { WriteString(sb, (string)v ?? ""); return; }
        if (t == typeof(bool)) { sb.Append((bool)v ? "true" : "false"); return; }
        if (t == typeof(int) || t == typeof(long) || t == typeof(byte)) { sb.Append(System.Convert.ToString(v, CultureInfo.InvariantCulture)); return; }
        if (t == typeof(double)) { sb.Append(((double)v).ToString("R", CultureInfo.InvariantCulture)); return; }
        if (t == typeof(float)) { sb.Append(((float)v).ToString("R", CultureInfo.InvariantCulture)); return; }
        if (t.IsArray)
        {
            sb.Append('[');
            var a = (Array)v;
            if (a != null) for (int k = 0; k < a.Length; k++) { if (k > 0) sb.Append(','); Write(sb, a.GetValue(k), t.GetElementType()); }
            sb.Append(']');
            return;
        }
        if (v == null) v = Activator.CreateInstance(t);
        sb.Append('{');
        bool first = true;
        foreach (var f in t.GetFields(BindingFlags.Public | BindingFlags.Instance))
        {
            if (!first) sb.Append(',');
            first = false;
            WriteString(sb, f.Name);
            sb.Append(':');
            Write(sb, f.GetValue(v), f.FieldType);
        }
        sb.Append('}');
    }

    static void WriteString(StringBuilder sb, string s)
    {
        sb.Append('"');
        foreach (var c in s)
        {
            if (c == '"' || c == '\\') sb.Append('\\').Append(c);
            else if (c < 0x20) sb.Append("\\u").Append(((int)c).ToString("x4"));
            else sb.Append(c);
        }
        sb.Append('"');
    }
}
