// twinstage mesh shader: merged or instanced geometry whose per-object colour,
// transform and overlay state live in two storage buffers shared by all batches,
// so a Frame rewrites a few records instead of any vertex data.
//
//   s_nodes    4 vec4 per node: rows of a row-vector affine matrix (USD order);
//              row0.w carries the node's object index
//   s_objects  2 vec4 per object: [overlay rgb (linear), overlay mix],
//              [alarm level, quality code, selected, hidden]  (see twin_fx.wgsl);
//              the vertex stage packs the first three into the colour's alpha
//   s_node     per vertex (merged batches): the node of the vertex; instanced
//              batches use u_material.node_offset + instance_index instead.
//
// Templated by pygfx (jinja2 line statements); the include below pulls in pygfx's std library.

{$ include 'pygfx.std.wgsl' $}

//@twin_fx@

struct VertexInput {
    @builtin(vertex_index) vertex_index : u32,
    @builtin(instance_index) instance_index : u32,
};

@vertex
fn vs_main(in: VertexInput) -> Varyings {
    let index = i32(in.vertex_index);
    let face = index / 3;
    let sub = index % 3;
    let tri = load_s_indices(face);
    let vi = tri[sub];

    $$ if instanced
    let node = u_material.node_offset + i32(in.instance_index);
    $$ else
    let node = load_s_node(vi);
    $$ endif

    let r0 = load_s_nodes(node * 4 + 0);
    let r1 = load_s_nodes(node * 4 + 1);
    let r2 = load_s_nodes(node * 4 + 2);
    let r3 = load_s_nodes(node * 4 + 3);
    let obj = i32(r0.w + 0.5);
    // USD row-vector rows are exactly the columns of the column-vector matrix
    let m = mat4x4<f32>(vec4<f32>(r0.xyz, 0.0), vec4<f32>(r1.xyz, 0.0), vec4<f32>(r2.xyz, 0.0), vec4<f32>(r3.xyz, 1.0));
    let world_transform = u_wobject.world_transform * m;

    let raw_pos = load_s_positions(vi);
    let world_pos = world_transform * vec4<f32>(raw_pos, 1.0);
    let ndc_pos = u_stdinfo.projection_transform * u_stdinfo.cam_transform * world_pos;

    // normal: divide by squared axis scales (no shear in twin transforms), then rotate
    let m3 = mat3x3<f32>(world_transform[0].xyz, world_transform[1].xyz, world_transform[2].xyz);
    var n = load_s_normals(vi);
    n = n / vec3<f32>(max(dot(m3[0], m3[0]), 1e-20), max(dot(m3[1], m3[1]), 1e-20), max(dot(m3[2], m3[2]), 1e-20));
    let world_normal = normalize(m3 * n);

    let overlay = load_s_objects(obj * 2);
    let state = load_s_objects(obj * 2 + 1);
    let packed = load_s_colors(vi);
    let rgba = unpack4x8unorm(packed);
    let base = vec4<f32>(srgb2physical(rgba.rgb), 1.0);

    var varyings: Varyings;
    $$ if outline
    // Outline pass: the same surface pushed outwards by outline_px screen pixels along its
    // normal and a little further away in depth, so the object itself covers the hull's
    // middle and only a rim shows around its silhouette (winding-independent: no culling).
    // the screen direction the normal points to, perspective included (project a nearby point)
    let ahead = u_stdinfo.projection_transform * u_stdinfo.cam_transform
                * vec4<f32>(world_pos.xyz / world_pos.w + world_normal * (1e-3 * max(abs(ndc_pos.w), 1e-6)), 1.0);
    let n_clip = ahead.xy / ahead.w - ndc_pos.xy / ndc_pos.w;
    let n_len = length(n_clip);
    let push = select(vec2<f32>(0.0), n_clip / max(n_len, 1e-12), n_len > 1e-12);
    var hull = ndc_pos;
    // depth: half of the remaining way to the far plane (never past it), so the hull stays behind every
    // face of its own object where it overlaps them
    hull = vec4<f32>(hull.xy + push * (2.0 * u_material.outline_px / u_stdinfo.logical_size) * hull.w,
                     hull.z + (hull.w - hull.z) * 0.5, hull.w);
    let wanted = state.x > 0.5 || state.z > 0.5;
    let clip_pos = select(vec4<f32>(2.0, 2.0, 2.0, 1.0), hull, wanted && state.w < 0.5);
    $$ else
    // hidden objects: put the vertex outside the clip volume (the triangle is culled)
    let clip_pos = select(ndc_pos, vec4<f32>(2.0, 2.0, 2.0, 1.0), state.w > 0.5);
    $$ endif
    varyings.position = vec4<f32>(clip_pos);
    varyings.world_pos = vec3<f32>(world_pos.xyz / world_pos.w);
    varyings.normal = vec3<f32>(world_normal);
    // alarm level, quality code and selection packed in alpha (fewer varyings to interpolate)
    let code = state.x + 4.0 * state.y + 16.0 * state.z;
    varyings.color = vec4<f32>(mix(base.rgb, overlay.rgb, overlay.a), code);
    varyings.opacity = f32(rgba.a);  // USD opacity (blended batches only; solid ones ignore it)
    $$ if write_pick
    varyings.pick_id = u32(u_wobject.global_id);
    $$ endif
    return varyings;
}

@fragment
fn fs_main(varyings: Varyings, @builtin(front_facing) is_front: bool) -> FragmentOutput {
    let code = u32(varyings.color.a + 0.5);
    let state = vec3<f32>(f32(code & 3u), f32((code >> 2u) & 3u), f32((code >> 4u) & 1u));
    $$ if outline
    var out_o: FragmentOutput;
    out_o.color = vec4<f32>(twin_outline_color(state.x, state.z, u_material.time, u_material.pulse_hz,
                                               u_material.warn_color.rgb, u_material.alarm_color.rgb, u_material.select_color.rgb), 1.0);
    $$ if write_pick
    out_o.pick = pick_pack(varyings.pick_id, 20);
    $$ endif
    return out_o;
    $$ else
    var albedo = varyings.color.rgb;
    if (state.y > 2.5) {
        albedo = twin_uncertain(albedo, varyings.position.xy, u_material.hatch_px);
    } else if (state.y > 1.5) {
        albedo = twin_hatch(albedo, varyings.position.xy, u_material.hatch_px);
    } else if (state.y > 0.5) {
        albedo = twin_grey(albedo);
    }

    let view = select(
        normalize(u_stdinfo.cam_transform_inv[3].xyz - varyings.world_pos),
        normalize((u_stdinfo.cam_transform_inv * vec4<f32>(0.0, 0.0, 1.0, 0.0)).xyz),
        is_orthographic()
    );
    var normal = normalize(varyings.normal);
    normal = select(-normal, normal, is_front);

    var lit = albedo;
    if (u_material.lighting > 0.5) {
        // hemisphere ambient around the stage's up axis + a head light slightly above the eye
        let up = u_material.up.xyz;
        let hemi = mix(u_material.ground, u_material.sky, 0.5 + 0.5 * dot(normal, up));
        let key_dir = normalize(view + up * 0.6);
        let diffuse = max(dot(normal, key_dir), 0.0);
        let half_v = normalize(key_dir + view);
        let spec = pow(max(dot(normal, half_v), 0.0), 32.0) * 0.12;
        lit = albedo * (hemi + u_material.key * diffuse) + vec3<f32>(spec);
    }

    if (state.x > 0.5) {
        lit = twin_alarm(lit, state.x, normal, view, u_material.time, u_material.pulse_hz,
                         u_material.warn_color.rgb, u_material.alarm_color.rgb);
    }
    if (state.z > 0.5) {
        lit = twin_selected(lit, normal, view, u_material.select_color.rgb);
    }

    var out: FragmentOutput;
    out.color = vec4<f32>(lit, varyings.opacity);
    $$ if write_pick
    out.pick = pick_pack(varyings.pick_id, 20);
    $$ endif
    return out;
    $$ endif
}
