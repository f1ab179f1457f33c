// Runs the Khronos glTF Validator on one .glb/.gltf and prints its report as JSON.
// Usage: NODE_PATH=<folder holding gltf-validator> node gltf_validate.cjs FILE
const fs = require('fs');
const path = require('path');
const validator = require('gltf-validator');

const file = path.resolve(process.argv[2]);
validator.validateBytes(new Uint8Array(fs.readFileSync(file)), {
  uri: path.basename(file),
  maxIssues: 0,
  externalResourceFunction: (uri) => new Promise((resolve, reject) => {
    try { resolve(new Uint8Array(fs.readFileSync(path.join(path.dirname(file), decodeURIComponent(uri))))); }
    catch (err) { reject(err.toString()); }
  }),
}).then((report) => console.log(JSON.stringify(report)), (err) => { console.error(err); process.exit(2); });
