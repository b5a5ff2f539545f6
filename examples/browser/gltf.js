// The scene's GLB for the browser client: three.js GLTFLoader (vendored, same version as three.js).
// glTF is Y-up metres with one root node converting from the stage's axes and units; that root
// is reset to identity so every node sits in stage coordinates, like the boxes and
// hello.prims[].position. Nodes are found by extras.twinId (twin prims) or extras.usdPath
// (scenery), which GLTFLoader puts in userData.
import { GLTFLoader } from './vendor/jsm/loaders/GLTFLoader.js';

export function materialsOf(obj) {
  const mats = [];
  obj.traverse(o => { if (o.isMesh) mats.push(...(Array.isArray(o.material) ? o.material : [o.material])); });
  return mats;
}

// { root, nodes: Map(id -> Object3D) } of the GLB at url (the token as a Bearer header).
export async function loadSceneGlb(url, token) {
  const loader = new GLTFLoader();
  if (token) loader.setRequestHeader({ Authorization: `Bearer ${token}` });
  const gltf = await loader.loadAsync(url);
  const root = gltf.scene.children.length === 1 ? gltf.scene.children[0] : gltf.scene;
  root.position.set(0, 0, 0); root.quaternion.identity(); root.scale.set(1, 1, 1);
  const nodes = new Map();
  root.traverse(o => {
    const id = o.userData.twinId || o.userData.usdPath;
    if (id && !nodes.has(id)) nodes.set(id, o);
  });
  return { root, nodes };
}

// A twin prim's node takes over from its box: its own material copies (colouring one asset
// leaves the others alone) and the box's userData fields the client uses.
export function adoptNode(node, prim, twinPrim) {
  node.traverse(o => { if (o.isMesh) o.material = Array.isArray(o.material) ? o.material.map(m => m.clone()) : o.material.clone(); });
  Object.assign(node.userData, { prim, twinPrim, materials: materialsOf(node), box: false });
}
