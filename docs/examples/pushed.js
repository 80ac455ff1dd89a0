console.log("pushed by h2proxy");
